"""Benchmark: from the API call changing a member to the change being visible in traffic.

One HTTP load balancer (round robin, 3 fast members, no health monitor so nothing but
OpenHA decides when a member serves) and a probe in a client namespace sending a
request every 5 ms on fresh connections; each answer names its member. Changes:
- `admin_state_up` false then true on one member (`PUT .../members/{id}`): applied by
  the agent through HAProxy's runtime API, without a reload;
- adding then deleting a fourth member (`POST` / `DELETE`): a new server needs a reload.
Visible means: for a removal, the first answer after the last one the member gave;
for an addition, the first answer it gives. Each change waits for ACTIVE plus a
settle period, and a removed member must not answer again during it.
The controller interval is the product default unless `--intervals` lists others
(each on a fresh stack). Controller steps are timestamped.

Target: p50 <= 250 ms.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Any

from harness import (
    DEFAULT_CONTROLLER_INTERVAL,
    ControllerTimeline,
    FastBackend,
    Probe,
    Stack,
    bench_stack,
    decorrelate,
    machine_line,
    percentile,
    print_table,
    require_root,
    wait_for,
)

TARGET_P50 = 0.25
SETTLE = 0.4  # after ACTIVE: how long a removed member must stay silent


@dataclass
class Change:
    kind: str  # disable / enable / add / delete
    t0: float  # just before the API call
    answered: float  # the API call returned
    visible: float
    active: float
    lb_id: str


def wait_active(stack: Stack, lb_id: str) -> float:
    def active() -> bool:
        lb = stack.lb(lb_id)
        assert lb["provisioning_status"] != "ERROR", lb
        return lb["provisioning_status"] == "ACTIVE"

    wait_for(active, 30, 0.01, what=f"LB {lb_id} ACTIVE")
    return time.monotonic()


def visible_time(probe: Probe, url: str, t0: float, member: str, appears: bool) -> float:
    """When the probe first saw the change to `member` (see the module docstring)."""
    samples = [s for s in probe.samples(t0, url) if s.ok]
    if appears:
        seen = [s.end for s in samples if s.backend == member]
        assert seen, f"{member} never answered after the change"
        return min(seen)
    last = max((s.end for s in samples if s.backend == member), default=None)
    after = [s.end for s in samples if s.backend != member and (last is None or s.start > last)]
    assert after, "no answers after the change"
    return min(after)


def change(
    stack: Stack,
    probe: Probe,
    url: str,
    lb_id: str,
    kind: str,
    member: str,
    call: Any,
) -> Change:
    decorrelate(stack.settings.controller_interval)
    t0 = time.monotonic()
    call()
    answered = time.monotonic()
    active = wait_active(stack, lb_id)
    appears = kind in ("enable", "add")

    def seen() -> bool:
        return any(s.ok and s.backend == member for s in probe.samples(t0, url))

    if appears:
        wait_for(seen, 10, 0.01, what=f"{member} answering")
    time.sleep(SETTLE)
    visible = visible_time(probe, url, t0, member, appears)
    if not appears:
        late = [s for s in probe.samples(active, url) if s.backend == member]
        assert not late, f"{member} still answered {len(late)} times after ACTIVE"
    return Change(kind, t0, answered, visible, active, lb_id)


def build_lb(stack: Stack, backends: list[FastBackend]) -> dict[str, Any]:
    body = {
        "name": "bench-members",
        "vip_subnet_id": stack.subnet_id,
        "listeners": [
            {
                "name": "http",
                "protocol": "HTTP",
                "protocol_port": 80,
                "default_pool": {
                    "name": "pool",
                    "protocol": "HTTP",
                    "lb_algorithm": "ROUND_ROBIN",
                    "members": [
                        {"address": b.ip, "protocol_port": b.port, "name": b.name} for b in backends
                    ],
                },
            }
        ],
    }
    resp = stack.tenant.post("/v2/lbaas/loadbalancers", json={"loadbalancer": body})
    assert resp.status_code == 201, resp.text
    lb = resp.json()["loadbalancer"]
    wait_active(stack, lb["id"])
    pools = stack.tenant.get("/v2/lbaas/pools", params={"loadbalancer_id": lb["id"]}).json()
    pool = pools["pools"][0]["id"]
    members = stack.tenant.get(f"/v2/lbaas/pools/{pool}/members").json()["members"]
    return {"lb": lb, "pool": pool, "members": {m["name"]: m["id"] for m in members}}


def run_interval(interval: float, toggles: int, adds: int) -> dict[str, Any]:
    with bench_stack(agents=1, controller_interval=interval) as (lab, stack):
        backends = [FastBackend(lab, f"web{i}") for i in range(1, 5)]
        made = build_lb(stack, backends[:3])
        lb_id, pool = made["lb"]["id"], made["pool"]
        url = f"http://{made['lb']['vip_address']}/"
        members = f"/v2/lbaas/pools/{pool}/members"
        changes: list[Change] = []
        with Probe(lab, interval=0.005, timeout=0.5) as probe, ControllerTimeline() as tl:
            probe.target(url)
            wait_for(
                lambda: (
                    {s.backend for s in probe.samples(0, url) if s.ok} >= {"web1", "web2", "web3"}
                ),
                15,
                what="all members answering",
            )
            web3 = made["members"]["web3"]

            def put(up: bool) -> None:
                resp = stack.tenant.put(
                    f"{members}/{web3}", json={"member": {"admin_state_up": up}}
                )
                assert resp.status_code == 200, resp.text

            for _ in range(toggles):
                changes.append(
                    change(stack, probe, url, lb_id, "disable", "web3", lambda: put(False))
                )
                changes.append(
                    change(stack, probe, url, lb_id, "enable", "web3", lambda: put(True))
                )
            web4 = backends[3]
            added: dict[str, str] = {}

            def add() -> None:
                body = {"member": {"address": web4.ip, "protocol_port": web4.port, "name": "web4"}}
                resp = stack.tenant.post(members, json=body)
                assert resp.status_code == 201, resp.text
                added["id"] = resp.json()["member"]["id"]

            def delete() -> None:
                resp = stack.tenant.delete(f"{members}/{added['id']}")
                assert resp.status_code == 204, resp.text

            for _ in range(adds):
                changes.append(change(stack, probe, url, lb_id, "add", "web4", add))
                changes.append(change(stack, probe, url, lb_id, "delete", "web4", delete))
        return {"changes": changes, "breakdown": breakdown(changes, tl)}


def breakdown(changes: list[Change], tl: ControllerTimeline) -> dict[str, list[tuple[str, float]]]:
    out: dict[str, list[tuple[str, float]]] = {}
    for path, kinds in (("runtime", ("disable", "enable")), ("reload", ("add", "delete"))):
        steps: dict[str, list[float]] = {}
        for c in (c for c in changes if c.kind in kinds):
            pick = tl.first(c.lb_id, "reconcile.start", c.answered)
            push = tl.first(c.lb_id, "push.start", c.answered)
            push_end = tl.first(c.lb_id, "push.end", push or c.answered)
            values = {
                "API call": c.answered - c.t0,
                "API answered -> controller picks the LB up": pick - c.answered if pick else None,
                "pick-up -> push to agent": push - pick if push and pick else None,
                "push -> visible in traffic": c.visible - push if push else None,
                "push total (agent answers)": push_end - push if push and push_end else None,
                "agent answered -> ACTIVE seen": c.active - push_end if push_end else None,
            }
            for name, v in values.items():
                if v is not None:
                    steps.setdefault(name, []).append(v)
        out[path] = [(name, statistics.median(v)) for name, v in steps.items()]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--toggles", type=int, default=10, help="disable+enable pairs")
    parser.add_argument("--adds", type=int, default=5, help="add+delete pairs")
    parser.add_argument(
        "--intervals",
        default=f"{DEFAULT_CONTROLLER_INTERVAL:g}",
        help="controller intervals to run with (comma-separated seconds; default: the "
        "product default)",
    )
    args = parser.parse_args()
    require_root()
    print(f"# member change -> visible in traffic ({machine_line()})\n", flush=True)
    rows = []
    details = []
    for interval in dict.fromkeys(float(x) for x in args.intervals.split(",")):
        result = run_interval(interval, args.toggles, args.adds)
        changes: list[Change] = result["changes"]
        groups = {
            "admin_state_up toggle (runtime API)": ("disable", "enable"),
            "add / delete member (reload)": ("add", "delete"),
            "all": ("disable", "enable", "add", "delete"),
        }
        for label, kinds in groups.items():
            vis = [c.visible - c.t0 for c in changes if c.kind in kinds]
            act = [c.active - c.t0 for c in changes if c.kind in kinds]
            rows.append(
                (
                    label,
                    f"{interval:g}",
                    len(vis),
                    percentile(vis, 50) * 1000,
                    percentile(vis, 90) * 1000,
                    max(vis) * 1000,
                    percentile(act, 50) * 1000,
                    f"{percentile(vis, 50) / TARGET_P50:.2f}x",
                )
            )
        details.append((interval, result["breakdown"]))
    print_table(
        "Member change -> visible in traffic (milliseconds)",
        ["change", "controller interval s", "n", "visible p50", "p90", "max", "ACTIVE p50",
         "p50 / 250 ms target"],
        rows,
    )  # fmt: skip
    for interval, parts in details:
        for path, steps in parts.items():
            print_table(
                f"Where the time goes: {path} path, controller interval {interval:g} s "
                "(medians, seconds)",
                ["step", "seconds"],
                steps,
            )


if __name__ == "__main__":
    main()
