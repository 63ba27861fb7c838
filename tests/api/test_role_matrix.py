"""Who may call what: every route the application has, called as every kind of caller.

The routes come from the application itself, so a route added without an entry in
`POLICY` fails here until someone says who may call it. Each (route, caller) has
an expected answer, for Keystone's roles and Octavia's load-balancer_* roles alike:
allowed callers get a 2xx, callers without credentials (or with an agent's, or an
invalid one) 401, callers whose role is too weak (or unknown) 403, and callers of
another project 403, as Octavia's policy answers (`openha.api.policy`). A
refused call must change nothing in the database; a list answered to another
project must not name project A's objects.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from openha import hosts
from openha.controller import operations
from openha.credentials import create_token
from openha.db import transaction
from openha.models import Base, Instance, Operation
from tests.api.factories import create_hm, create_lb, create_listener, create_member, create_pool
from tests.conftest import PROJECT_A, PROJECT_B, Client

ADMIN, MEMBER_A, READER_A, MEMBER_B = "admin", "member_a", "reader_a", "member_b"
ANONYMOUS, INVALID, AGENT = "anonymous", "invalid_token", "agent"
# Octavia's advanced RBAC roles (honoured beside Keystone's) and a role Octavia does not know.
LB_MEMBER_A, LB_OBSERVER_A, GLOBAL_OBSERVER_B, NO_ROLE_A = (
    "lb_member_a",
    "lb_observer_a",
    "global_observer_b",
    "no_role_a",
)
ROLE_TOKENS = {
    LB_MEMBER_A: (PROJECT_A, "load-balancer_member"),
    LB_OBSERVER_A: (PROJECT_A, "load-balancer_observer"),
    GLOBAL_OBSERVER_B: (PROJECT_B, "load-balancer_global_observer"),
    NO_ROLE_A: (PROJECT_A, "unrelated"),
}
IDENTITIES = (ADMIN, MEMBER_A, READER_A, MEMBER_B, ANONYMOUS, INVALID, AGENT, *ROLE_TOKENS)
OK = frozenset({200, 201, 202, 204})
# Rows that change on their own (service heartbeats), not through a request.
# Beats, and the audit trail (every write is recorded, a refused one too).
VOLATILE_TABLES = frozenset({"services", "audit_records"})


@dataclass(frozen=True)
class Rule:
    """Expected answers per caller; `leak_check` lists must not name project A's objects."""

    expect: dict[str, frozenset[int]]
    leak_check: bool = False


S401, S403, S404 = frozenset({401}), frozenset({403}), frozenset({404})


def _rule(
    read: bool = False, write: bool = False, global_read: bool = False, **by: frozenset[int]
) -> dict[str, frozenset[int]]:
    """`read`/`write`: Octavia's observer and member roles of project A may; `global_read`:
    the global observer may too. A token with no role Octavia knows is always refused."""
    base = {ident: S401 for ident in (ANONYMOUS, INVALID, AGENT)}
    roles = {
        LB_MEMBER_A: OK if read or write else S403,
        LB_OBSERVER_A: OK if read else S403,
        GLOBAL_OBSERVER_B: OK if global_read else S403,
        NO_ROLE_A: S403,
    }
    return base | roles | by


# Anyone, credentials or not: version documents and the API description.
PUBLIC = Rule({ident: frozenset({200}) for ident in IDENTITIES})
# Any authenticated caller (catalogues, shared networks, one's own lists).
ANY_TOKEN = Rule(_rule(True, global_read=True, admin=OK, member_a=OK, reader_a=OK, member_b=OK))
# A list every caller may ask for, scoped to their project: B sees none of A's rows.
LIST = Rule(
    _rule(True, global_read=True, admin=OK, member_a=OK, reader_a=OK, member_b=OK),
    leak_check=True,
)
# Project A's objects: B is refused them (Octavia's policy checks the object's project).
READ_A = Rule(_rule(True, global_read=True, admin=OK, member_a=OK, reader_a=OK, member_b=S403))
WRITE_A = Rule(_rule(write=True, admin=OK, member_a=OK, reader_a=S403, member_b=S403))
# Project A's port (Neutron's answer): B is told it does not exist.
PORT_A = Rule(_rule(True, global_read=True, admin=OK, member_a=OK, reader_a=OK, member_b=S404))
# Creating in one's own project (B creates its own LB: allowed).
CREATE = Rule(_rule(write=True, admin=OK, member_a=OK, reader_a=S403, member_b=OK))
# Creating under project A's parent named in the body: B is refused.
CREATE_UNDER_A = Rule(_rule(write=True, admin=OK, member_a=OK, reader_a=S403, member_b=S403))
# Quotas of project A: Octavia's policy refuses other projects (403), not 404.
QUOTA_A = Rule(_rule(True, global_read=True, admin=OK, member_a=OK, reader_a=OK, member_b=S403))
# Project A's webhook (OpenHA's extension, not Octavia's): B is told it does not exist.
HIDDEN_READ_A = Rule(
    _rule(True, global_read=True, admin=OK, member_a=OK, reader_a=OK, member_b=S404)
)
# Project A's secrets: no global observer reads another project's private keys.
SECRET_LIST = Rule(_rule(True, admin=OK, member_a=OK, reader_a=OK, member_b=OK), leak_check=True)
SECRET_READ_A = Rule(_rule(True, admin=OK, member_a=OK, reader_a=OK, member_b=S404))
HIDDEN_WRITE_A = Rule(_rule(write=True, admin=OK, member_a=OK, reader_a=S403, member_b=S404))
OPERATOR = Rule(_rule(admin=OK, member_a=S403, reader_a=S403, member_b=S403))
# An admin action this world's state refuses (a 4xx that must change nothing) or takes.
OPERATOR_ACTION = Rule(_rule(admin=OK | {400, 409}, member_a=S403, reader_a=S403, member_b=S403))
# A secret's payload is given once (409 after) and the matrix sends none (413): whoever
# may write gets past the policy, whatever the body says.
PAYLOAD_ONCE = Rule(
    _rule(write=True, admin=OK | {409, 413}, member_a=OK | {409, 413}, reader_a=S403, member_b=S404)
    | {LB_MEMBER_A: OK | {409, 413}}
)
AGENT_ONLY = Rule({ident: S401 for ident in IDENTITIES} | {AGENT: OK})

# Normalised "METHOD /v2/path" (the /v2.0 and /lbaas aliases folded in) -> rule.
POLICY: dict[str, Rule] = {
    "GET /": PUBLIC,
    "GET /docs": PUBLIC,
    "GET /docs/oauth2-redirect": PUBLIC,
    "GET /redoc": PUBLIC,
    "GET /openapi.json": PUBLIC,
    "GET /v2": PUBLIC,
    "GET /v2/": PUBLIC,
    "GET /v2/lbaas": PUBLIC,
    "GET /v2/octavia": PUBLIC,
    "GET /metrics": OPERATOR,
    "POST /v2/agent/register": AGENT_ONLY,
    "POST /v2/agent/heartbeat": AGENT_ONLY,
    # Octavia's load balancer tree.
    "GET /v2/loadbalancers": LIST,
    "POST /v2/loadbalancers": CREATE,
    "GET /v2/loadbalancers/{ident}": READ_A,
    "PUT /v2/loadbalancers/{lb_id}": WRITE_A,
    "DELETE /v2/loadbalancers/{ident}": WRITE_A,
    "GET /v2/loadbalancers/{lb_id}/stats": READ_A,
    "GET /v2/loadbalancers/{lb_id}/logs": READ_A,
    "GET /v2/loadbalancers/{lb_id}/diagnostics": READ_A,
    "GET /v2/loadbalancers/{lb_id}/protection": READ_A,
    "GET /v2/loadbalancers/{lb_id}/status": READ_A,
    "GET /v2/loadbalancers/{lb_id}/statuses": READ_A,
    "PUT /v2/loadbalancers/{lb_id}/failover": OPERATOR,
    "GET /v2/listeners": LIST,
    "POST /v2/listeners": CREATE_UNDER_A,
    "GET /v2/listeners/{ident}": READ_A,
    "PUT /v2/listeners/{listener_id}": WRITE_A,
    "DELETE /v2/listeners/{ident}": WRITE_A,
    "GET /v2/listeners/{listener_id}/stats": READ_A,
    "GET /v2/pools": LIST,
    "POST /v2/pools": CREATE_UNDER_A,
    "GET /v2/pools/{ident}": READ_A,
    "PUT /v2/pools/{pool_id}": WRITE_A,
    "DELETE /v2/pools/{ident}": WRITE_A,
    "GET /v2/pools/{pool_id}/members": READ_A,
    "POST /v2/pools/{pool_id}/members": WRITE_A,
    "PUT /v2/pools/{pool_id}/members": WRITE_A,
    "GET /v2/pools/{pool_id}/members/{ident}": READ_A,
    "PUT /v2/pools/{pool_id}/members/{member_id}": WRITE_A,
    "DELETE /v2/pools/{pool_id}/members/{ident}": WRITE_A,
    "GET /v2/healthmonitors": LIST,
    "POST /v2/healthmonitors": CREATE_UNDER_A,
    "GET /v2/healthmonitors/{ident}": READ_A,
    "PUT /v2/healthmonitors/{hm_id}": WRITE_A,
    "DELETE /v2/healthmonitors/{ident}": WRITE_A,
    "GET /v2/l7policies": LIST,
    "POST /v2/l7policies": CREATE_UNDER_A,
    "GET /v2/l7policies/{ident}": READ_A,
    "PUT /v2/l7policies/{l7policy_id}": WRITE_A,
    "DELETE /v2/l7policies/{ident}": WRITE_A,
    "GET /v2/l7policies/{l7policy_id}/rules": READ_A,
    "POST /v2/l7policies/{l7policy_id}/rules": WRITE_A,
    "GET /v2/l7policies/{l7policy_id}/rules/{ident}": READ_A,
    "PUT /v2/l7policies/{l7policy_id}/rules/{rule_id}": WRITE_A,
    "DELETE /v2/l7policies/{l7policy_id}/rules/{ident}": WRITE_A,
    "GET /v2/quotas": LIST,
    "GET /v2/quotas/defaults": ANY_TOKEN,
    "GET /v2/quotas/{project_id}": QUOTA_A,
    "GET /v2/quotas/{project_id}/default": QUOTA_A,
    "PUT /v2/quotas/{project_id}": OPERATOR,
    "DELETE /v2/quotas/{project_id}": OPERATOR,
    "GET /v2/providers": ANY_TOKEN,
    "GET /v2/providers/{provider}/flavor_capabilities": OPERATOR,
    "GET /v2/providers/{provider}/availability_zone_capabilities": OPERATOR,
    # Catalogues: everyone reads flavors and zones, only operators their profiles.
    "GET /v2/flavors": ANY_TOKEN,
    "GET /v2/flavors/{ident}": ANY_TOKEN,
    "POST /v2/flavors": OPERATOR,
    "PUT /v2/flavors/{ident}": OPERATOR,
    "DELETE /v2/flavors/{ident}": OPERATOR,
    "GET /v2/flavorprofiles": OPERATOR,
    "GET /v2/flavorprofiles/{ident}": OPERATOR,
    "POST /v2/flavorprofiles": OPERATOR,
    "PUT /v2/flavorprofiles/{ident}": OPERATOR,
    "DELETE /v2/flavorprofiles/{ident}": OPERATOR,
    "GET /v2/availabilityzones": ANY_TOKEN,
    "GET /v2/availabilityzones/{ident}": ANY_TOKEN,
    "POST /v2/availabilityzones": OPERATOR,
    "PUT /v2/availabilityzones/{ident}": OPERATOR,
    "DELETE /v2/availabilityzones/{ident}": OPERATOR,
    "GET /v2/availabilityzoneprofiles": OPERATOR,
    "GET /v2/availabilityzoneprofiles/{ident}": OPERATOR,
    "POST /v2/availabilityzoneprofiles": OPERATOR,
    "PUT /v2/availabilityzoneprofiles/{ident}": OPERATOR,
    "DELETE /v2/availabilityzoneprofiles/{ident}": OPERATOR,
    # Networks: a shared one is read by all, written by operators only.
    "GET /v2/networks": LIST,
    "POST /v2/networks": OPERATOR,
    "GET /v2/networks/{ident}": ANY_TOKEN,
    "PUT /v2/networks/{network_id}": OPERATOR,
    "DELETE /v2/networks/{ident}": OPERATOR,
    "GET /v2/networks/{ident}/tags": ANY_TOKEN,
    "PUT /v2/networks/{ident}/tags": OPERATOR,
    "DELETE /v2/networks/{ident}/tags": OPERATOR,
    "PUT /v2/networks/{ident}/tags/{tag}": OPERATOR,
    "DELETE /v2/networks/{ident}/tags/{tag}": OPERATOR,
    "GET /v2/subnets": LIST,
    "POST /v2/subnets": OPERATOR,
    "GET /v2/subnets/{ident}": ANY_TOKEN,
    "PUT /v2/subnets/{subnet_id}": OPERATOR,
    "DELETE /v2/subnets/{ident}": OPERATOR,
    "GET /v2/subnets/{ident}/tags": ANY_TOKEN,
    "PUT /v2/subnets/{ident}/tags": OPERATOR,
    "DELETE /v2/subnets/{ident}/tags": OPERATOR,
    "PUT /v2/subnets/{ident}/tags/{tag}": OPERATOR,
    "DELETE /v2/subnets/{ident}/tags/{tag}": OPERATOR,
    "GET /v2/ports": LIST,
    "GET /v2/ports/{ident}": PORT_A,
    "GET /v2/extensions": ANY_TOKEN,
    # Operators only.
    "GET /v2/octavia/amphorae": OPERATOR,
    "GET /v2/octavia/amphorae/{ident}": OPERATOR,
    "GET /v2/octavia/amphorae/{amphora_id}/stats": OPERATOR,
    "PUT /v2/octavia/amphorae/{amphora_id}/failover": OPERATOR,
    "PUT /v2/octavia/amphorae/{amphora_id}/config": OPERATOR,
    "GET /v2/manage/hosts": OPERATOR,
    "GET /v2/manage/hosts/{ident}": OPERATOR,
    "PUT /v2/manage/hosts/{host_id}": OPERATOR,
    "GET /v2/manage/instances": OPERATOR,
    "GET /v2/manage/instances/{ident}": OPERATOR,
    "GET /v2/manage/events": OPERATOR,
    "GET /v2/manage/loadbalancers/{lb_id}/logs": OPERATOR,
    "GET /v2/manage/loadbalancers/{lb_id}/diagnostics": OPERATOR,
    # Events and webhooks: a project's own (/v2/lbaas), every project's (/v2/manage).
    "GET /v2/events": LIST,
    "GET /v2/webhooks": LIST,
    "POST /v2/webhooks": CREATE,
    "GET /v2/webhooks/{ident}": HIDDEN_READ_A,
    "PUT /v2/webhooks/{webhook_id}": HIDDEN_WRITE_A,
    "DELETE /v2/webhooks/{ident}": HIDDEN_WRITE_A,
    "GET /v2/webhooks/{webhook_id}/deliveries": HIDDEN_READ_A,
    "GET /v2/manage/webhooks": OPERATOR,
    "POST /v2/manage/webhooks": OPERATOR,
    "GET /v2/manage/webhooks/{ident}": OPERATOR,
    "PUT /v2/manage/webhooks/{webhook_id}": OPERATOR,
    "DELETE /v2/manage/webhooks/{ident}": OPERATOR,
    "GET /v2/manage/webhooks/{webhook_id}/deliveries": OPERATOR,
    "GET /v2/manage/prometheus/targets": OPERATOR,
    # Operations: the one host of this world already runs the LB (migrate: 409) and
    # the LB's instance keeps it from being deleted (409); both change nothing.
    "GET /v2/manage/operations": OPERATOR,
    "GET /v2/manage/operations/{ident}": OPERATOR,
    "POST /v2/manage/loadbalancers/{lb_id}/migrate": OPERATOR_ACTION,
    "POST /v2/manage/hosts/{host_id}/drain": OPERATOR,
    "POST /v2/manage/hosts/{host_id}/undrain": OPERATOR,
    "DELETE /v2/manage/hosts/{host_id}": OPERATOR_ACTION,
    "POST /v2/manage/loadbalancers/{lb_id}/sync": OPERATOR,
    "POST /v2/manage/loadbalancers/{lb_id}/reload": OPERATOR,
    "POST /v2/manage/loadbalancers/{lb_id}/force-recover": OPERATOR,
    "GET /v2/manage/loadbalancers/{lb_id}/diff": OPERATOR,
    "GET /v2/manage/loadbalancers/{lb_id}/export": OPERATOR,
    "GET /v2/manage/audit": OPERATOR,
    # Protection (issue 12): profiles, an LB's override, under-attack mode, top talkers.
    "GET /v2/manage/protection-profiles": OPERATOR,
    "POST /v2/manage/protection-profiles": OPERATOR,
    "GET /v2/manage/protection-profiles/{ident}": OPERATOR,
    "PUT /v2/manage/protection-profiles/{profile_id}": OPERATOR,
    "DELETE /v2/manage/protection-profiles/{profile_id}": OPERATOR_ACTION,
    "GET /v2/manage/loadbalancers/{lb_id}/protection": OPERATOR,
    "PUT /v2/manage/loadbalancers/{lb_id}/protection": OPERATOR,
    "POST /v2/manage/loadbalancers/{lb_id}/protect": OPERATOR,
    "DELETE /v2/manage/loadbalancers/{lb_id}/protect": OPERATOR,
    "GET /v2/manage/loadbalancers/{lb_id}/top-talkers": OPERATOR,
    # The certificate store (Barbican v1), scoped by project like the rest.
    "GET /key-manager": PUBLIC,
    "GET /key-manager/v1": PUBLIC,
    "POST /key-manager/v1/secrets": CREATE,
    "GET /key-manager/v1/secrets": SECRET_LIST,
    "GET /key-manager/v1/secrets/{secret_id}": SECRET_READ_A,
    "GET /key-manager/v1/secrets/{secret_id}/payload": SECRET_READ_A,
    "PUT /key-manager/v1/secrets/{secret_id}": PAYLOAD_ONCE,
    "DELETE /key-manager/v1/secrets/{secret_id}": HIDDEN_WRITE_A,
    "POST /key-manager/v1/containers": CREATE,
    "GET /key-manager/v1/containers": SECRET_LIST,
    "GET /key-manager/v1/containers/{container_id}": SECRET_READ_A,
    "DELETE /key-manager/v1/containers/{container_id}": HIDDEN_WRITE_A,
}

# Deletes run last, children before parents, the load balancer last of its tree.
DELETE_ORDER = (
    "/v2/manage/loadbalancers/{lb_id}/protect",
    "/v2/l7policies/{l7policy_id}/rules/{ident}",
    "/v2/l7policies/{ident}",
    "/v2/pools/{pool_id}/members/{ident}",
    "/v2/healthmonitors/{ident}",
    "/v2/pools/{ident}",
    "/v2/listeners/{ident}",
    "/v2/loadbalancers/{ident}",
    "/v2/quotas/{project_id}",
    "/v2/flavors/{ident}",
    "/v2/flavorprofiles/{ident}",
    "/v2/availabilityzones/{ident}",
    "/v2/availabilityzoneprofiles/{ident}",
    "/v2/networks/{ident}/tags/{tag}",
    "/v2/networks/{ident}/tags",
    "/v2/subnets/{ident}/tags/{tag}",
    "/v2/subnets/{ident}/tags",
    "/v2/subnets/{ident}",
    "/v2/networks/{ident}",
    "/v2/webhooks/{ident}",
    "/v2/manage/webhooks/{ident}",
    "/v2/manage/hosts/{host_id}",
    "/v2/manage/protection-profiles/{profile_id}",
    "/key-manager/v1/containers/{container_id}",
    "/key-manager/v1/secrets/{secret_id}",
)
# PUTs that replace what other routes use come after the rest.
PUT_LAST = ("/v2/pools/{pool_id}/members",)


def normalise(path: str) -> str:
    if path.startswith("/key-manager"):
        return path.rstrip("/")  # Barbican's clients add a slash to some paths
    path = "/v2" + path.removeprefix("/v2.0") if path.startswith("/v2.0") else path
    return path.replace("/v2/lbaas/", "/v2/", 1)


def app_routes(app: Any) -> dict[str, list[str]]:
    """Normalised route -> every concrete template the app serves it under."""
    out: dict[str, list[str]] = {}
    for route in iter_route_contexts(app.routes):
        for method in sorted(route.methods or ()):
            if method == "HEAD":
                continue
            out.setdefault(f"{method} {normalise(route.path)}", []).append(route.path)
    return out


def fingerprint(sessions: sessionmaker[Session]) -> str:
    """Every row of every table, as text: equal before and after means nothing changed."""
    with sessions() as s:
        tables = {
            name: [
                list(map(str, row))
                for row in s.execute(text(f'SELECT * FROM "{name}" ORDER BY 1')).all()
            ]
            for name in sorted(Base.metadata.tables)
            if name not in VOLATILE_TABLES
        }
    return json.dumps(tables, sort_keys=True)


class DatabaseState:
    """`fingerprint`, read again only when some statement wrote a watched table since.

    Most refused calls follow another refused call, so the state before one is the
    state after the last. Every call writes the audit trail, so SQLite's
    `data_version` moves each time; triggers on the watched tables count their
    writes instead (a body built for the call may have written, for instance).
    A count that moved only says "read again": the fingerprints still decide.
    """

    COUNTER = "test_watched_writes"

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self.count: int | None = None
        self.last = ""
        with transaction(sessions) as s:
            s.execute(text(f"CREATE TABLE {self.COUNTER} (n INTEGER NOT NULL)"))
            s.execute(text(f"INSERT INTO {self.COUNTER} VALUES (0)"))
            for name in sorted(Base.metadata.tables):
                if name in VOLATILE_TABLES:
                    continue
                for event in ("INSERT", "UPDATE", "DELETE"):
                    s.execute(
                        text(
                            f'CREATE TRIGGER "count_{event}_{name}" AFTER {event} ON "{name}" '
                            f"BEGIN UPDATE {self.COUNTER} SET n = n + 1; END"
                        )
                    )

    def fingerprint(self) -> str:
        with self.sessions() as s:
            count = s.scalar(text(f"SELECT n FROM {self.COUNTER}"))
        if count != self.count:
            self.count, self.last = count, fingerprint(self.sessions)
        return self.last


class World:
    """Project A's tree and the operator's catalogue, for every route to have a target."""

    def __init__(
        self,
        http: TestClient,
        clients: dict[str, Client],
        sessions: sessionmaker[Session],
        subnet_id: str,
    ) -> None:
        admin, alice = clients[ADMIN], clients[MEMBER_A]
        self.lb = create_lb(alice, subnet_id, name="a-lb")
        self.listener = create_listener(alice, self.lb["id"], protocol_port=80)
        self.pool = create_pool(alice, listener_id=self.listener["id"])
        self.spare_pool = create_pool(alice, lb_id=self.lb["id"])
        self.member = create_member(alice, self.pool["id"])
        self.hm = create_hm(alice, self.pool["id"])
        self.policy = self._made(
            alice.post(
                "/v2/lbaas/l7policies",
                {"l7policy": {"listener_id": self.listener["id"], "action": "REJECT"}},
            ),
            "l7policy",
        )
        self.rule = self._made(
            alice.post(
                f"/v2/lbaas/l7policies/{self.policy['id']}/rules",
                {"rule": {"type": "PATH", "compare_type": "STARTS_WITH", "value": "/a"}},
            ),
            "rule",
        )
        self.flavorprofile = self._made(
            admin.post(
                "/v2/lbaas/flavorprofiles",
                {"flavorprofile": {"name": "fp", "provider_name": "noop", "flavor_data": "{}"}},
            ),
            "flavorprofile",
        )
        self.flavor = self._made(
            admin.post(
                "/v2/lbaas/flavors",
                {"flavor": {"name": "f", "flavor_profile_id": self.flavorprofile["id"]}},
            ),
            "flavor",
        )
        self.azprofile = self._made(
            admin.post(
                "/v2/lbaas/availabilityzoneprofiles",
                {
                    "availability_zone_profile": {
                        "name": "azp",
                        "provider_name": "noop",
                        "availability_zone_data": "{}",
                    }
                },
            ),
            "availability_zone_profile",
        )
        self.az = self._made(
            admin.post(
                "/v2/lbaas/availabilityzones",
                {
                    "availability_zone": {
                        "name": "az-a",
                        "availability_zone_profile_id": self.azprofile["id"],
                    }
                },
            ),
            "availability_zone",
        )
        self.network = self._made(
            admin.post(
                "/v2.0/networks",
                {
                    "network": {
                        "name": "spare",
                        "shared": True,
                        "tags": ["t1"],
                        "provider:physical_network": "ohmx0",
                    }
                },
            ),
            "network",
        )
        self.subnet = self._made(
            admin.post(
                "/v2.0/subnets",
                {
                    "subnet": {
                        "network_id": self.network["id"],
                        "cidr": "203.0.113.0/24",
                        "tags": ["t1"],
                    }
                },
            ),
            "subnet",
        )
        self.vip_subnet = subnet_id
        self.webhook = self._made(
            alice.post("/v2/lbaas/webhooks", {"webhook": {"url": "http://127.0.0.1:9/a"}}),
            "webhook",
        )
        self.op_webhook = self._made(
            admin.post("/v2/manage/webhooks", {"webhook": {"url": "http://127.0.0.1:9/o"}}),
            "webhook",
        )
        self.secret_id = self._made(
            alice.post(
                "/key-manager/v1/secrets/",
                {"name": "a", "payload": "a", "payload_content_type": "text/plain"},
            ),
            "secret_ref",
        ).rsplit("/", 1)[-1]
        self.container_id = self._made(
            alice.post("/key-manager/v1/containers/", {"type": "generic", "name": "a"}),
            "container_ref",
        ).rsplit("/", 1)[-1]
        # What the creates hang new rows on, so that the deletes above can go.
        self.kept = {
            "flavorprofile": self._made(
                admin.post(
                    "/v2/lbaas/flavorprofiles",
                    {"flavorprofile": {"name": "k", "provider_name": "noop", "flavor_data": "{}"}},
                ),
                "flavorprofile",
            )["id"],
            "azprofile": self._made(
                admin.post(
                    "/v2/lbaas/availabilityzoneprofiles",
                    {
                        "availability_zone_profile": {
                            "name": "k",
                            "provider_name": "noop",
                            "availability_zone_data": "{}",
                        }
                    },
                ),
                "availability_zone_profile",
            )["id"],
            "network": self._made(
                admin.post(
                    "/v2.0/networks",
                    {"network": {"name": "k", "provider:physical_network": "ohmxk"}},
                ),
                "network",
            )["id"],
        }
        self.protection_profile = self._made(
            admin.post(
                "/v2/manage/protection-profiles",
                {"protection_profile": {"name": "pp", "request_rate": 50}},
            ),
            "protection_profile",
        )
        self.agent_secret = self._enroll(sessions)
        resp = http.post(
            "/v2/agent/register",
            headers={"Authorization": f"Bearer {self.agent_secret}"},
            json=self.register_body,
        )
        self.host_id = self._made(resp, "host_id", 200)
        with transaction(sessions) as s:
            instance = Instance(load_balancer_id=self.lb["id"], host_id=self.host_id)
            s.add(instance)
            s.flush()
            self.instance_id = instance.id
            self.operation_id = operations.start(
                s, "migrate", "loadbalancer", self.lb["id"], {}, "role-matrix"
            ).id
            s.get(Operation, self.operation_id).state = "SUCCEEDED"  # type: ignore[union-attr]
        with sessions() as s:
            port = s.scalar(select(Instance.port_id).where(Instance.id == self.instance_id))
        self.port_id = self.lb["vip_port_id"] or port

    register_body = {
        "name": "matrix-host",
        "availability_zone": "az1",
        "capacity": 10,
        "management_url": "http://127.0.0.1:1",
        "agent_secret": "agent-secret",
    }

    @staticmethod
    def _enroll(sessions: sessionmaker[Session]) -> str:
        with transaction(sessions) as s:
            return hosts.enroll(s, "matrix-host", "az1")

    @staticmethod
    def _made(resp: Any, key: str, status: int = 201) -> Any:
        assert resp.status_code == status, resp.text
        return resp.json()[key]

    def a_ids(self) -> list[str]:
        """Ids of project A's objects, which project B must never read."""
        objects = (
            self.lb,
            self.listener,
            self.pool,
            self.spare_pool,
            self.member,
            self.hm,
            self.webhook,
        )
        return [o["id"] for o in objects] + [
            self.policy["id"],
            self.rule["id"],
            self.port_id,
            self.secret_id,
            self.container_id,
        ]

    def concrete(self, template: str) -> str:
        """A path to call: each `{param}` is project A's (or the operator's) object of the
        kind named by the segment before it."""
        by_segment: dict[str, str] = {
            "loadbalancers": self.lb["id"],
            "listeners": self.listener["id"],
            "pools": self.pool["id"],
            "members": self.member["id"],
            "healthmonitors": self.hm["id"],
            "l7policies": self.policy["id"],
            "rules": self.rule["id"],
            "quotas": PROJECT_A,
            "providers": "noop",
            "flavors": self.flavor["id"],
            "flavorprofiles": self.flavorprofile["id"],
            "availabilityzones": self.az["name"],
            "availabilityzoneprofiles": self.azprofile["id"],
            "networks": self.network["id"],
            "subnets": self.subnet["id"],
            "ports": self.port_id,
            "tags": "t1",
            "amphorae": self.instance_id,
            "instances": self.instance_id,
            "hosts": self.host_id,
            "webhooks": (self.op_webhook if "/manage/" in template else self.webhook)["id"],
            "operations": self.operation_id,
            "protection-profiles": self.protection_profile["id"],
            "secrets": self.secret_id,
            "containers": self.container_id,
        }
        parts = template.split("/")
        for i, part in enumerate(parts):
            if part.startswith("{"):
                parts[i] = by_segment[parts[i - 1]]
        path = "/".join(parts)
        if template.endswith("/loadbalancers/{ident}"):
            path += "?cascade=true"
        return path

    def body(self, key: str, n: int) -> Any:
        """A valid body for the write `key`, different on each call `n`."""
        method, path = key.split(" ", 1)
        lb, listener = self.lb["id"], self.listener["id"]
        creates: dict[str, Callable[[], Any]] = {
            "/v2/loadbalancers": lambda: {"loadbalancer": {"vip_subnet_id": self.vip_subnet}},
            "/v2/manage/loadbalancers/{lb_id}/migrate": lambda: {"host": self.host_id},
            "/v2/manage/hosts/{host_id}/drain": lambda: None,
            "/v2/manage/hosts/{host_id}/undrain": lambda: None,
            "/v2/listeners": lambda: {
                "listener": {"loadbalancer_id": lb, "protocol": "HTTP", "protocol_port": 1000 + n}
            },
            "/v2/pools": lambda: {
                "pool": {"loadbalancer_id": lb, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}
            },
            "/v2/pools/{pool_id}/members": lambda: {
                "member": {"address": "192.0.2.200", "protocol_port": 1 + n}
            },
            "/v2/healthmonitors": lambda: {
                "healthmonitor": {
                    "pool_id": self._fresh_pool(n),
                    "type": "TCP",
                    "delay": 5,
                    "timeout": 3,
                    "max_retries": 3,
                }
            },
            "/v2/l7policies": lambda: {"l7policy": {"listener_id": listener, "action": "REJECT"}},
            "/v2/l7policies/{l7policy_id}/rules": lambda: {
                "rule": {"type": "PATH", "compare_type": "STARTS_WITH", "value": f"/p{n}"}
            },
            "/v2/flavorprofiles": lambda: {
                "flavorprofile": {"name": f"fp{n}", "provider_name": "noop", "flavor_data": "{}"}
            },
            "/v2/flavors": lambda: {
                "flavor": {"name": f"f{n}", "flavor_profile_id": self.kept["flavorprofile"]}
            },
            "/v2/availabilityzoneprofiles": lambda: {
                "availability_zone_profile": {
                    "name": f"azp{n}",
                    "provider_name": "noop",
                    "availability_zone_data": "{}",
                }
            },
            "/v2/availabilityzones": lambda: {
                "availability_zone": {
                    "name": f"az{n}",
                    "availability_zone_profile_id": self.kept["azprofile"],
                }
            },
            "/v2/networks": lambda: {
                "network": {"name": f"n{n}", "provider:physical_network": f"ohmx{n}"}
            },
            "/v2/subnets": lambda: {
                "subnet": {
                    "network_id": self.kept["network"],
                    "cidr": f"10.{n // 256 % 256}.{n % 256}.0/24",
                }
            },
            "/v2/webhooks": lambda: {"webhook": {"url": f"http://127.0.0.1:9/{n}"}},
            "/v2/manage/webhooks": lambda: {"webhook": {"url": f"http://127.0.0.1:9/{n}"}},
            "/v2/manage/protection-profiles": lambda: {
                "protection_profile": {"name": f"pp{n}", "request_rate": 10 + n}
            },
            "/v2/manage/loadbalancers/{lb_id}/protect": lambda: {
                "profile": self.protection_profile["id"]
            },
            "/v2/agent/register": lambda: self.register_body,
            # Operators' actions take no body.
            "/v2/manage/loadbalancers/{lb_id}/sync": dict,
            "/v2/manage/loadbalancers/{lb_id}/reload": dict,
            "/v2/manage/loadbalancers/{lb_id}/force-recover": dict,
            "/key-manager/v1/secrets": lambda: {
                "name": f"s{n}",
                "payload": f"p{n}",
                "payload_content_type": "text/plain",
            },
            "/key-manager/v1/containers": lambda: {"type": "generic", "name": f"c{n}"},
            "/v2/agent/heartbeat": lambda: {
                "host_id": self.host_id,
                "name": "matrix-host",
                "instances": [],
                "full": False,
            },
        }
        updates: dict[str, Any] = {
            "/v2/loadbalancers/{lb_id}": {"loadbalancer": {"description": f"d{n}"}},
            "/v2/listeners/{listener_id}": {"listener": {"description": f"d{n}"}},
            "/v2/pools/{pool_id}": {"pool": {"description": f"d{n}"}},
            "/v2/pools/{pool_id}/members/{member_id}": {"member": {"weight": n % 200}},
            "/v2/pools/{pool_id}/members": {
                "members": [
                    {
                        "address": self.member["address"],
                        "protocol_port": self.member["protocol_port"],
                    }
                ]
            },
            "/v2/healthmonitors/{hm_id}": {"healthmonitor": {"delay": 6 + n}},
            "/v2/l7policies/{l7policy_id}": {"l7policy": {"description": f"d{n}"}},
            "/v2/l7policies/{l7policy_id}/rules/{rule_id}": {"rule": {"value": f"/u{n}"}},
            "/v2/quotas/{project_id}": {"quota": {"listener": 50 + n}},
            "/v2/flavors/{ident}": {"flavor": {"description": f"d{n}"}},
            "/v2/flavorprofiles/{ident}": {"flavorprofile": {"name": f"fp-{n}"}},
            "/v2/availabilityzones/{ident}": {"availability_zone": {"description": f"d{n}"}},
            "/v2/availabilityzoneprofiles/{ident}": {
                "availability_zone_profile": {"name": f"azp-{n}"}
            },
            "/v2/networks/{network_id}": {"network": {"description": f"d{n}"}},
            "/v2/subnets/{subnet_id}": {"subnet": {"description": f"d{n}"}},
            "/v2/networks/{ident}/tags": {"tags": ["t1", f"t{n + 2}"]},
            "/v2/subnets/{ident}/tags": {"tags": ["t1", f"t{n + 2}"]},
            "/v2/manage/hosts/{host_id}": {"host": {"capacity": 20 + n}},
            "/v2/webhooks/{webhook_id}": {"webhook": {"name": f"w{n}"}},
            "/v2/manage/webhooks/{webhook_id}": {"webhook": {"name": f"w{n}"}},
            "/v2/manage/protection-profiles/{profile_id}": {
                "protection_profile": {"request_rate": 20 + n}
            },
            "/v2/manage/loadbalancers/{lb_id}/protection": {"profile": "pp"},
        }
        if method == "POST":
            return creates[path]()
        return updates.get(path)

    def _fresh_pool(self, n: int) -> str:
        """A pool without a health monitor (each HM create needs its own)."""
        if n == 0:
            return str(self.spare_pool["id"])
        resp = self._alice.post(
            "/v2/lbaas/pools",
            {
                "pool": {
                    "loadbalancer_id": self.lb["id"],
                    "protocol": "HTTP",
                    "lb_algorithm": "ROUND_ROBIN",
                }
            },
        )
        return str(self._made(resp, "pool")["id"])

    _alice: Client


def _order(key: str) -> tuple[int, int, str]:
    method, path = key.split(" ", 1)
    phase = {"GET": 0, "POST": 1, "PUT": 2, "DELETE": 3}[method]
    if method == "DELETE":
        return (phase, DELETE_ORDER.index(path), path)
    return (phase, int(path in PUT_LAST), path)


@pytest.fixture
def callers(
    http: TestClient, tokens: dict[str, str], session_factory: sessionmaker[Session]
) -> dict[str, Client]:
    with transaction(session_factory) as s:
        roles = {
            ident: Client(http, create_token(s, project, [role]))
            for ident, (project, role) in ROLE_TOKENS.items()
        }
    return {
        ADMIN: Client(http, tokens["admin"]),
        MEMBER_A: Client(http, tokens["a"]),
        READER_A: Client(http, tokens["a_reader"]),
        MEMBER_B: Client(http, tokens["b"]),
        **roles,
    }


def test_every_route_has_a_policy(app: Any) -> None:
    served = set(app_routes(app))
    assert served - set(POLICY) == set(), "routes without an entry in POLICY"
    assert set(POLICY) - served == set(), "POLICY names routes the app does not serve"
    deletes = {k.split(" ", 1)[1] for k in served if k.startswith("DELETE ")}
    assert deletes == set(DELETE_ORDER)


def test_role_route_matrix(
    app: Any,
    http: TestClient,
    callers: dict[str, Client],
    session_factory: sessionmaker[Session],
    subnet_id: str,
) -> None:
    world = World(http, callers, session_factory, subnet_id)
    world._alice = callers[MEMBER_A]
    headers: dict[str, dict[str, str]] = {
        **{ident: client.headers for ident, client in callers.items()},
        ANONYMOUS: {},
        INVALID: {"X-Auth-Token": "not-a-token"},
        AGENT: {"Authorization": f"Bearer {world.agent_secret}"},
    }
    a_ids = world.a_ids()
    failures: list[str] = []
    checks = 0
    counter = iter(range(10_000))
    state = DatabaseState(session_factory)

    def call(ident: str, method: str, template: str, body: Any) -> Any:
        return http.request(method, world.concrete(template), headers=headers[ident], json=body)

    for key, templates in sorted(app_routes(app).items(), key=lambda kv: _order(kv[0])):
        rule = POLICY[key]
        method = key.split(" ", 1)[0]
        canonical = templates[0]
        denied = [i for i in IDENTITIES if not rule.expect[i] & OK]
        allowed = [i for i in IDENTITIES if rule.expect[i] & OK]
        # Every alias of the route (/v2.0, without /lbaas) refuses the same callers.
        calls = [(i, t) for i in denied for t in templates]
        # Allowed callers last (their writes change what later calls see); a delete
        # once, by the least privileged of them.
        if method == "DELETE":
            allowed = allowed[-1:]
        calls += [(i, canonical) for i in allowed]
        for ident, template in calls:
            expected = rule.expect[ident]
            refused = not expected & OK
            body = world.body(key, next(counter)) if method in ("POST", "PUT") else None
            before = state.fingerprint() if refused and method != "GET" else None
            resp = call(ident, method, template, body)
            checks += 1
            where = f"{key} as {ident} ({template})"
            if resp.status_code not in expected:
                failures.append(f"{where}: {resp.status_code} not in {sorted(expected)}")
                continue
            if before is not None and state.fingerprint() != before:
                failures.append(f"{where}: refused with {resp.status_code} but changed rows")
            if rule.leak_check and ident == MEMBER_B:
                leaked = [i for i in a_ids if i and i in resp.text]
                if leaked:
                    failures.append(f"{where}: names project A's {leaked}")
    assert not failures, "\n".join(failures)
    assert checks > 500
