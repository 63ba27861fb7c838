"""Benchmark: moving load balancers between hosts (migrate, drain) as a client sees it.

Three agents (hosts), fast members answering from HAProxy itself, and probes in
client namespaces sending a request every 5 ms on fresh connections (200 ms
timeout): every request is counted.
- migrate SINGLE: `POST /v2/manage/loadbalancers/{id}/migrate {"host": …}` to the
  next host, trial after trial; time from the POST to the operation SUCCEEDED,
  failed requests between the POST and 0.5 s after. Baseline in the same run: a
  planned failover of the same LB (`PUT /v2/lbaas/loadbalancers/{id}/failover`,
  what Octavia offers to move an amphora: break-before-make), until it serves
  from the new host.
- migrate ACTIVE_STANDBY: the same with a pair (baseline: its planned failover, until
  the pair is whole again).
- drain: `--drain-lbs` SINGLE LBs all on one host (the others disabled while they
  are created), then `POST /v2/manage/hosts/{id}/drain` until the operation
  SUCCEEDED; probes on `--drain-probes` of those LBs, spread over the drain.
  Baseline: the drain's LBs moved one after the other would take LBs x the
  SINGLE migrate p50 measured above.

Target: 0 failed requests everywhere.
"""

from __future__ import annotations

import argparse
import itertools
import time
from typing import Any

from harness import (
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


def lb_body(stack: Stack, backends: list[FastBackend], flavor_id: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "vip_subnet_id": stack.subnet_id,
        "listeners": [
            {
                "protocol": "HTTP",
                "protocol_port": 80,
                "default_pool": {
                    "name": "web",
                    "protocol": "HTTP",
                    "lb_algorithm": "ROUND_ROBIN",
                    "members": [{"address": b.ip, "protocol_port": b.port} for b in backends],
                },
            }
        ],
    }
    if flavor_id:
        body["flavor_id"] = flavor_id
    return body


def create_lb(stack: Stack, body: dict[str, Any], wait: bool = True) -> dict[str, Any]:
    resp = stack.tenant.post("/v2/lbaas/loadbalancers", json={"loadbalancer": body})
    assert resp.status_code == 201, resp.text
    lb = dict(resp.json()["loadbalancer"])
    if wait:
        stack.wait_active(lb["id"], timeout=120)
    return lb


def pair_flavor(stack: Stack) -> str:
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
    flavor = stack.admin.post(
        "/v2/lbaas/flavors",
        json={"flavor": {"name": "ha", "flavor_profile_id": profile.json()["flavorprofile"]["id"]}},
    )
    return str(flavor.json()["flavor"]["id"])


def instances(stack: Stack, lb_id: str) -> list[dict[str, Any]]:
    resp = stack.admin.get("/v2/manage/instances", params={"load_balancer_id": lb_id})
    return list(resp.json()["instances"])


def settled(stack: Stack, lb_id: str, size: int, not_ids: set[str]) -> bool:
    """`size` new instances (none of `not_ids`), serving; a pair with MASTER and BACKUP."""
    insts = instances(stack, lb_id)
    if len(insts) != size or {i["id"] for i in insts} & not_ids:
        return False
    if not all(i["haproxy_running"] for i in insts):
        return False
    if size == 2 and sorted(str(i["vrrp_state"]) for i in insts) != ["BACKUP", "MASTER"]:
        return False
    return stack.lb(lb_id)["provisioning_status"] == "ACTIVE"


def finished(stack: Stack, location: str, timeout: float = 600) -> dict[str, Any]:
    def over() -> dict[str, Any] | None:
        op = stack.admin.get(location).json()["operation"]
        return op if op["state"] in ("SUCCEEDED", "FAILED") else None

    op = dict(wait_for(over, timeout, 0.05, what=f"operation {location}"))
    assert op["state"] == "SUCCEEDED", op
    return op


def failed_between(probe: Probe, url: str, since: float, until: float) -> tuple[int, int]:
    samples = [s for s in probe.samples(since, url) if s.end <= until]
    return sum(1 for s in samples if not s.ok), len(samples)


def trial(
    stack: Stack, probe: Probe, url: str, lb_id: str, size: int, kind: str
) -> tuple[float, int, int]:
    """(seconds, failed requests, requests) of one migrate or planned failover."""
    wait_for(lambda: settled(stack, lb_id, size, set()), 60, 0.1, what="LB settled")
    time.sleep(0.5)
    before = instances(stack, lb_id)
    ids = {i["id"] for i in before}
    t0 = time.monotonic()
    if kind == "migrate":
        used = {i["host_id"] for i in before}
        target = next(a for a in itertools.cycle(stack.agents) if a.host_id not in used)
        resp = stack.admin.post(
            f"/v2/manage/loadbalancers/{lb_id}/migrate", json={"host": target.host_id}
        )
        assert resp.status_code == 202, resp.text
        finished(stack, resp.headers["Location"])
        # A pair's last half is rebuilt once the operation saw it whole: it is.
    else:
        resp = stack.admin.put(f"/v2/lbaas/loadbalancers/{lb_id}/failover")
        assert resp.status_code == 202, resp.text
        # A SINGLE's failover rebuilds its only instance; a pair's, the VIP holder.
        wait_for(
            lambda: (
                settled(stack, lb_id, size, ids if size == 1 else set())
                and {i["id"] for i in instances(stack, lb_id)} != ids
            ),
            60,
            0.05,
            what="failover done",
        )
    took = time.monotonic() - t0
    time.sleep(0.5)
    failed, total = failed_between(probe, url, t0, time.monotonic())
    return took, failed, total


def topology_rows(
    lab: Any, stack: Stack, backends: list[FastBackend], trials: int, pair: bool
) -> tuple[list[tuple[Any, ...]], float]:
    flavor = pair_flavor(stack) if pair else None
    lb = create_lb(stack, lb_body(stack, backends, flavor))
    url = f"http://{lb['vip_address']}/"
    size = 2 if pair else 1
    name = "ACTIVE_STANDBY" if pair else "SINGLE"
    rows = []
    migrate_p50 = float("nan")
    with Probe(lab, name=f"probe-{size}", interval=0.005, timeout=0.2) as probe:
        probe.target(url)
        wait_for(lambda: any(s.ok for s in probe.samples(0, url)), 30, what="VIP answering")
        for kind in ("migrate", "failover"):
            results = []
            for n in range(trials):
                took, failed, total = trial(stack, probe, url, lb["id"], size, kind)
                results.append((took, failed, total))
                print(
                    f"- {name} {kind} {n + 1}: {took:.2f} s, {failed} failed of {total}",
                    flush=True,
                )
            times = [r[0] for r in results]
            if kind == "migrate":
                migrate_p50 = percentile(times, 50)
            rows.append(
                (
                    name,
                    "migrate (make-before-break)" if kind == "migrate" else "planned failover",
                    len(results),
                    percentile(times, 50),
                    max(times),
                    sum(r[1] for r in results),
                    sum(r[2] for r in results),
                )
            )
    stack.tenant.delete(f"/v2/lbaas/loadbalancers/{lb['id']}", params={"cascade": "true"})
    return rows, migrate_p50


def set_state(stack: Stack, agents: list[Any], state: str) -> None:
    for agent in agents:
        resp = stack.admin.put(
            f"/v2/manage/hosts/{agent.host_id}", json={"host": {"admin_state": state}}
        )
        assert resp.status_code == 200, resp.text


def drain_row(
    lab: Any, stack: Stack, backends: list[FastBackend], count: int, probes: int
) -> tuple[float, int, int]:
    home, *others = stack.agents
    # Each LB holds two addresses (VIP, instance) and a third while it moves.
    pool = list(lab.network.hosts())
    resp = stack.admin.put(
        f"/v2.0/subnets/{stack.subnet_id}",
        json={"subnet": {"allocation_pools": [{"start": str(pool[100]), "end": str(pool[-2])}]}},
    )
    assert resp.status_code == 200, resp.text
    set_state(stack, others, "DISABLED")
    lbs = [create_lb(stack, lb_body(stack, backends, None), wait=False) for _ in range(count)]
    for lb in lbs:
        stack.wait_active(lb["id"], timeout=300)
    set_state(stack, others, "ENABLED")
    assert all(instances(stack, lb["id"])[0]["host_id"] == home.host_id for lb in lbs)
    watched = [lbs[i * count // probes] for i in range(probes)]
    made = [Probe(lab, name=f"dprobe{i}", interval=0.005, timeout=0.2) for i in range(probes)]
    urls = [f"http://{lb['vip_address']}/" for lb in watched]
    for probe, url in zip(made, urls, strict=True):
        probe.target(url)
        wait_for(lambda p=probe, u=url: any(s.ok for s in p.samples(0, u)), 30, what="VIP")
    time.sleep(0.5)
    t0 = time.monotonic()
    resp = stack.admin.post(f"/v2/manage/hosts/{home.host_id}/drain")
    assert resp.status_code == 202, resp.text
    finished(stack, resp.headers["Location"], timeout=1200)
    took = time.monotonic() - t0
    time.sleep(0.5)
    failed = total = 0
    for probe, url in zip(made, urls, strict=True):
        f, t = failed_between(probe, url, t0, time.monotonic())
        failed, total = failed + f, total + t
        probe.close()
    host = stack.admin.get(f"/v2/manage/hosts/{home.host_id}").json()["host"]
    assert (host["admin_state"], host["instance_count"]) == ("DRAINED", 0), host
    return took, failed, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=5, help="trials of each kind")
    parser.add_argument("--drain-lbs", type=int, default=50)
    parser.add_argument("--drain-probes", type=int, default=5)
    parser.add_argument("--skip", default="", help="comma list of: single,pair,drain")
    args = parser.parse_args()
    require_root()
    skip = set(args.skip.split(",")) - {""}
    print(f"# Migrate and drain ({machine_line()})\n", flush=True)
    rows: list[tuple[Any, ...]] = []
    single_p50 = float("nan")
    with bench_stack(agents=3) as (lab, stack):
        backends = [FastBackend(lab, f"web{i}") for i in range(1, 4)]
        if "single" not in skip:
            found, single_p50 = topology_rows(lab, stack, backends, args.trials, pair=False)
            rows += found
        if "pair" not in skip:
            rows += topology_rows(lab, stack, backends, args.trials, pair=True)[0]
        if rows:
            print_table(
                "Migrate vs planned failover (seconds; requests every 5 ms, fresh connections)",
                ["topology", "action", "trials", "time p50", "time max", "failed", "requests"],
                rows,
            )
        if "drain" not in skip:
            took, failed, total = drain_row(lab, stack, backends, args.drain_lbs, args.drain_probes)
            serial = args.drain_lbs * single_p50
            print_table(
                f"Drain of a host with {args.drain_lbs} SINGLE load balancers "
                f"(drain_concurrency {stack.settings.drain_concurrency}; "
                f"{args.drain_probes} of them probed)",
                ["LBs", "drain (s)", "per LB (s)", "one by one (s, LBs x migrate p50)",
                 "ratio", "failed", "requests"],
                [(args.drain_lbs, took, took / args.drain_lbs, serial, took / serial,
                  failed, total)],
            )  # fmt: skip


if __name__ == "__main__":
    main()
