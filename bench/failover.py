"""Benchmark: ACTIVE_STANDBY failover as a client sees it, and how fast the pair is whole again.

Built entirely through the API: a flavor profile `{"loadbalancer_topology":
"ACTIVE_STANDBY"}` for the haproxy provider, a flavor, three agents (hosts) and an
HTTP load balancer of that flavor (3 fast members). A probe in a client namespace
sends a request every 10 ms on fresh connections with a 200 ms timeout; the gap of
a trial is the longest time between two successful answers around the event.
Trials:
- unplanned: the host of the MASTER instance dies (`Agent.kill_host()`: agent,
  HAProxy, keepalived killed, links down); after the trial it boots again;
- planned: `PUT /v2/lbaas/loadbalancers/{id}/failover` as admin.
"Whole again" is when `GET /v2/manage/instances?load_balancer_id=...` shows two
instances, on two UP hosts, HAProxy running, one MASTER and one BACKUP (and, for a
planned failover, one of them new). Controller interval and host-down delay are the
product defaults.

Targets: gap <= 2 s unplanned, <= 0.5 s planned; whole again <= 10 s.
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import dataclass
from typing import Any

from harness import (
    DEFAULT_HOST_DOWN_AFTER,
    FastBackend,
    Probe,
    Stack,
    bench_stack,
    machine_line,
    percentile,
    print_table,
    require_root,
    wait_for,
)

TARGETS = {"unplanned": (2.0, 10.0), "planned": (0.5, 10.0)}


@dataclass
class Trial:
    kind: str
    gap: float
    whole: float
    failed: int  # probe requests that failed during the trial


def ha_flavor(stack: Stack) -> str:
    profile = stack.admin.post(
        "/v2/lbaas/flavorprofiles",
        json={
            "flavorprofile": {
                "name": "bench-pair",
                "provider_name": "haproxy",
                "flavor_data": '{"loadbalancer_topology": "ACTIVE_STANDBY"}',
            }
        },
    )
    assert profile.status_code == 201, profile.text
    flavor = stack.admin.post(
        "/v2/lbaas/flavors",
        json={
            "flavor": {
                "name": "bench-ha",
                "flavor_profile_id": profile.json()["flavorprofile"]["id"],
            }
        },
    )
    assert flavor.status_code == 201, flavor.text
    return str(flavor.json()["flavor"]["id"])


def ha_lb(stack: Stack, backends: list[FastBackend]) -> dict[str, Any]:
    body = {
        "name": "bench-pair",
        "vip_subnet_id": stack.subnet_id,
        "flavor_id": ha_flavor(stack),
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
    stack.wait_active(lb["id"], timeout=60)
    return dict(lb)


def instances(stack: Stack, lb_id: str) -> list[dict[str, Any]]:
    resp = stack.admin.get("/v2/manage/instances", params={"load_balancer_id": lb_id})
    assert resp.status_code == 200, resp.text
    return list(resp.json()["instances"])


def host_status(stack: Stack) -> dict[str, str]:
    hosts = stack.admin.get("/v2/manage/hosts").json()["hosts"]
    return {h["id"]: h["status"] for h in hosts}


def whole(
    stack: Stack, lb_id: str, not_ids: set[str] | frozenset[str] = frozenset()
) -> list[dict[str, Any]]:
    """The pair's instances if it is whole (see the module docstring), else []."""
    insts = instances(stack, lb_id)
    up = host_status(stack)
    if len(insts) != 2 or len({i["host_id"] for i in insts}) != 2:
        return []
    if not all(up.get(i["host_id"]) == "UP" and i["haproxy_running"] for i in insts):
        return []
    if sorted(str(i["vrrp_state"]) for i in insts) != ["BACKUP", "MASTER"]:
        return []
    if not_ids and not ({i["id"] for i in insts} - not_ids):
        return []
    return insts


def longest_gap(probe: Probe, url: str, since: float, until: float) -> tuple[float, int]:
    samples = probe.samples(since, url)
    oks = [s.end for s in samples if s.ok and s.end <= until]
    failed = sum(1 for s in samples if not s.ok and s.end <= until)
    gaps = [b - a for a, b in itertools.pairwise(oks)]
    return (max(gaps) if gaps else float("nan")), failed


def trial(stack: Stack, probe: Probe, url: str, lb_id: str, kind: str) -> Trial:
    before = wait_for(lambda: whole(stack, lb_id), 60, 0.1, what="pair whole before a trial")
    time.sleep(0.5)  # the probe's steady state before the event
    ids = {i["id"] for i in before}
    t0 = time.monotonic()
    if kind == "unplanned":
        master = next(i for i in before if i["vrrp_state"] == "MASTER")
        victim = next(a for a in stack.agents if a.host_id == master["host_id"])
        victim.kill_host()
        wait_for(lambda: whole(stack, lb_id, ids), 60, 0.05, what="pair whole after host loss")
    else:
        victim = None
        resp = stack.admin.put(f"/v2/lbaas/loadbalancers/{lb_id}/failover")
        assert resp.status_code == 202, resp.text
        wait_for(lambda: whole(stack, lb_id, ids), 60, 0.05, what="pair whole after failover")
    t_whole = time.monotonic()
    time.sleep(0.5)  # a gap that ends after "whole" must still be seen
    gap, failed = longest_gap(probe, url, t0 - 0.5, time.monotonic())
    if victim is not None:
        victim.revive()
        wait_for(lambda: not victim.instance_dirs(), 30, 0.1, what="revived host drops orphans")
    return Trial(kind, gap, t_whole - t0, failed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=10, help="trials of each kind")
    parser.add_argument("--kinds", default="planned,unplanned")
    args = parser.parse_args()
    require_root()
    print(f"# ACTIVE_STANDBY failover ({machine_line()})\n", flush=True)
    trials: list[Trial] = []
    with bench_stack(agents=3) as (lab, stack):
        backends = [FastBackend(lab, f"web{i}") for i in range(1, 4)]
        lb = ha_lb(stack, backends)
        url = f"http://{lb['vip_address']}/"
        with Probe(lab, interval=0.01, timeout=0.2) as probe:
            probe.target(url)
            wait_for(lambda: any(s.ok for s in probe.samples(0, url)), 30, what="VIP answering")
            for kind in args.kinds.split(","):
                for n in range(args.trials):
                    t = trial(stack, probe, url, lb["id"], kind)
                    trials.append(t)
                    print(
                        f"- {kind} trial {n + 1}: gap {t.gap:.3f} s, whole again {t.whole:.2f} s, "
                        f"{t.failed} failed requests",
                        flush=True,
                    )
    rows = []
    for kind in args.kinds.split(","):
        ts = [t for t in trials if t.kind == kind]
        gaps = [t.gap for t in ts]
        wholes = [t.whole for t in ts]
        gap_target, whole_target = TARGETS[kind]
        rows.append(
            (
                kind,
                len(ts),
                percentile(gaps, 50),
                max(gaps),
                f"<= {gap_target:g}",
                percentile(wholes, 50),
                max(wholes),
                f"<= {whole_target:g}",
            )
        )
    print_table(
        f"Failover (seconds; a host is declared down after {DEFAULT_HOST_DOWN_AFTER:g} s "
        "without heartbeat)",
        ["failover", "trials", "gap p50", "gap max", "gap target", "whole again p50",
         "whole again max", "whole target"],
        rows,
    )  # fmt: skip


if __name__ == "__main__":
    main()
