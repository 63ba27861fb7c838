"""Differences kept on purpose: where Octavia 19 is buggy, OpenHA answers correctly instead.

Each entry names the scenario step, the kind of difference and (a prefix of)
its path, and says why. The checker lists these apart and does not fail on
them; anything else that differs fails `make conformance`.
"""

from __future__ import annotations

from dataclasses import dataclass

from conformance.compare import Difference


@dataclass(frozen=True)
class Accepted:
    step: str
    kind: str  # "*" for any kind
    path: str  # a prefix of Difference.path; "" for any
    reason: str

    def covers(self, d: Difference) -> bool:
        return d.step == self.step and self.kind in ("*", d.kind) and d.path.startswith(self.path)


ACCEPTED = [
    Accepted(
        "list members",
        "value",
        "members[].operating_status",
        "A disabled member (m3) of a pool without a monitor: Octavia's API writes NO_MONITOR "
        "and, with no health manager here, nothing ever settles it (a live Octavia turns it "
        "OFFLINE at the first heartbeat: HAProxy holds it in MAINT). OpenHA writes that final "
        "OFFLINE in the write that makes it ACTIVE, so it does not change under a client that "
        "just saw it (octavia-tempest-plugin's member list test compares the two).",
    ),
    Accepted(
        "list LBs, fields comma-separated",
        "*",
        "",
        "Octavia takes `fields=id,name` for one field named 'id,name' and answers empty "
        "objects; OpenHA splits on commas, as Neutron does and as clients mean it.",
    ),
    Accepted(
        "method not allowed on an object",
        "*",
        "",
        "Pecan routes POST /loadbalancers/{id} to the collection's POST with the id as "
        "its body and answers 400; OpenHA answers 405 with an Allow header.",
    ),
    Accepted(
        "create flavor, unknown profile",
        "status",
        "",
        "Octavia answers 500 (a foreign key error from its database); OpenHA answers 400 "
        "naming the profile.",
    ),
    Accepted(
        "list LBs, previous page, more rows before",
        "*",
        "loadbalancers",
        "With page_reverse=True Octavia only flips the comparison with the marker and keeps "
        "the order, so it answers the *first* rows before the marker; OpenHA answers the "
        "rows immediately before it, the page a `previous` link means.",
    ),
    Accepted(
        "show LB, fields tenant_id",
        "extra",
        "loadbalancer.tenant_id",
        "Octavia's field filter unsets project_id, and its tenant_id property reads "
        "project_id, so `fields=tenant_id` alone answers nothing; OpenHA answers the "
        "field asked for (with project_id beside it, both agree).",
    ),
    Accepted(
        "create FILE_TYPE rule with a key",
        "*",
        "rule.key",
        "Octavia echoes a key given to a HOST_NAME, PATH or FILE_TYPE rule in its create "
        "answer, then clears it with the rule's first update (L7RuleRepository.update, run "
        "when its worker marks the rule ACTIVE); OpenHA drops it at once, so its answer "
        "says what the rule keeps.",
    ),
    Accepted(
        "list LBs, filtered and paginated",
        "value",
        "loadbalancers_links[].href",
        "Octavia's links carry only limit, sort and sort_key, so following them loses the "
        "filter (and sort_dir); OpenHA carries those too, after Octavia's.",
    ),
]


def accepted(d: Difference) -> Accepted | None:
    return next((a for a in ACCEPTED if a.covers(d)), None)
