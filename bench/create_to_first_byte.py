"""Benchmark: from the API POST of a load balancer to its first HTTP answer through the VIP.

For each of `--count` load balancers, created one after the other and kept (so the
last ones share the agent with the first ones), measures from just before the POST:
- first byte: the end of the first successful request a client namespace makes to
  the VIP (the probe starts as soon as the POST has answered with the VIP, sends a
  request every 5 ms on fresh connections, and fails fast while the VIP is absent);
- ACTIVE: the first time `GET /loadbalancers/{id}` shows provisioning ACTIVE
  (polled every 20 ms).
Two ways to create: the fully populated graph (listener + pool + 3 members + health
monitor in one POST), and step by step (6 POSTs back to back, no waiting between
them: OpenHA merges changes while pending). The controller interval is the product
default unless `--intervals` says otherwise; each interval gets a fresh stack.
Controller steps are timestamped by `ControllerTimeline` to show where time goes.

Target: first byte p50 <= 1 s (graph create, default settings).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
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

from openha.render.haproxy import SANDBOX_GID_ENV, SANDBOX_UID_ENV

TARGET_P50 = 1.0
HM = {
    "type": "HTTP",
    "delay": 5,
    "timeout": 2,
    "max_retries": 2,
    "max_retries_down": 2,
    "url_path": "/",
}


def pool_body(backends: list[FastBackend]) -> dict[str, Any]:
    return {"name": "pool", "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}


def member_bodies(backends: list[FastBackend]) -> list[dict[str, Any]]:
    return [{"address": b.ip, "protocol_port": b.port, "name": b.name} for b in backends]


def graph_body(stack: Stack, backends: list[FastBackend], i: int) -> dict[str, Any]:
    pool = {**pool_body(backends), "members": member_bodies(backends), "healthmonitor": HM}
    return {
        "name": f"bench-graph-{i}",
        "vip_subnet_id": stack.subnet_id,
        "listeners": [
            {"name": "http", "protocol": "HTTP", "protocol_port": 80, "default_pool": pool}
        ],
    }


class Run:
    """One create, with every timestamp taken on it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.t0 = 0.0
        self.posted = 0.0  # last POST answered
        self.lb_id = ""
        self.vip = ""
        self.first_byte = 0.0
        self.active = 0.0
        self.failed_attempts = 0


def create_graph(stack: Stack, backends: list[FastBackend], i: int, run: Run) -> None:
    run.t0 = time.monotonic()
    resp = stack.tenant.post(
        "/v2/lbaas/loadbalancers", json={"loadbalancer": graph_body(stack, backends, i)}
    )
    run.posted = time.monotonic()
    assert resp.status_code == 201, resp.text
    lb = resp.json()["loadbalancer"]
    run.lb_id, run.vip = lb["id"], lb["vip_address"]


def create_steps(stack: Stack, backends: list[FastBackend], i: int, run: Run, probe: Probe) -> None:
    run.t0 = time.monotonic()
    lb = stack.create(
        "loadbalancers",
        "loadbalancer",
        {"name": f"bench-steps-{i}", "vip_subnet_id": stack.subnet_id},
    )
    run.lb_id, run.vip = lb["id"], lb["vip_address"]
    probe.target(f"http://{run.vip}/")
    li = stack.create(
        "listeners",
        "listener",
        {"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": 80},
    )
    po = stack.create("pools", "pool", {"listener_id": li["id"], **pool_body(backends)})
    for m in member_bodies(backends):
        stack.create(f"pools/{po['id']}/members", "member", m)
    stack.create("healthmonitors", "healthmonitor", {"pool_id": po["id"], **HM})
    run.posted = time.monotonic()


def measure(stack: Stack, probe: Probe, backends: list[FastBackend], kind: str, i: int) -> Run:
    run = Run(kind)
    if kind == "graph":
        create_graph(stack, backends, i, run)
        probe.target(f"http://{run.vip}/")
    else:
        create_steps(stack, backends, i, run, probe)
    url = f"http://{run.vip}/"

    def active() -> bool:
        status = stack.lb(run.lb_id)["provisioning_status"]
        assert status != "ERROR", stack.lb(run.lb_id)
        return status == "ACTIVE"

    wait_for(active, 30, 0.02, what=f"LB {run.lb_id} ACTIVE")
    run.active = time.monotonic()

    def first_ok() -> float | None:
        ok = [s for s in probe.samples(run.t0, url) if s.ok]
        return min(s.end for s in ok) if ok else None

    try:
        run.first_byte = wait_for(first_ok, 30, 0.01, what=f"first byte from {url}")
    except AssertionError:
        seen = probe.samples(run.t0, url)
        raise AssertionError(
            f"no answer from {url} in 30 s; {len(seen)} attempts, last: {seen[-3:]}"
        ) from None
    run.failed_attempts = sum(
        1 for s in probe.samples(run.t0, url) if not s.ok and s.end <= run.first_byte
    )
    probe.target(None)
    return run


def breakdown(runs: list[Run], timeline: ControllerTimeline) -> list[tuple[str, float]]:
    """Median seconds of each step, from the last POST to the first byte."""
    steps: dict[str, list[float]] = {}

    def add(name: str, value: float | None) -> None:
        if value is not None:
            steps.setdefault(name, []).append(value)

    for r in runs:
        rec = timeline.first(r.lb_id, "reconcile.start", r.posted)
        # The pass that applied the final generation: the last push that starts before
        # the first byte (the step-by-step path may push intermediate generations).
        pushes = [
            t for n, t in timeline.events.get(r.lb_id, []) if n == "push.start" and t < r.first_byte
        ]
        push = pushes[-1] if pushes else None
        push_end = timeline.first(r.lb_id, "push.end", push or 0.0)
        fin = timeline.first(r.lb_id, "finalize.end", push_end or 0.0)
        add("POST (API answer)", r.posted - r.t0)
        add("POST answered -> controller picks the LB up", rec - r.posted if rec else None)
        rec_before_push = timeline.events.get(r.lb_id, [])
        apply_start = max(
            (t for n, t in rec_before_push if n == "reconcile.start" and push and t <= push),
            default=None,
        )
        add(
            "pick-up -> push to agent (snapshot, placement, render)",
            push - apply_start if push and apply_start else None,
        )
        add(
            "push -> first byte (agent: netns, haproxy -c, start)",
            r.first_byte - push if push else None,
        )
        add(
            "push total (agent answers the controller)",
            push_end - push if push and push_end else None,
        )
        add("agent answered -> ACTIVE visible in API", r.active - push_end if push_end else None)
        add("finalize done -> ACTIVE seen by poller", r.active - fin if fin else None)
    return [(name, statistics.median(v)) for name, v in steps.items()]


def haproxy_check_seconds(stack: Stack, tries: int = 5) -> float:
    """Median time of `haproxy -c` on a rendered config (the agent runs it on every apply)."""
    cfg = next(d / "haproxy.cfg" for d in stack.agents[0].instance_dirs())
    times = []
    for _ in range(tries):
        start = time.monotonic()
        subprocess.run(
            ["haproxy", "-c", "-q", "-f", str(cfg)],
            check=True,
            capture_output=True,
            env={**os.environ, SANDBOX_UID_ENV: "1000000000", SANDBOX_GID_ENV: "1000000000"},
        )
        times.append(time.monotonic() - start)
    return statistics.median(times)


def error_flaps(stack: Stack, lb_ids: list[str]) -> int:
    """How many of `lb_ids` passed through operating_status ERROR (they all end ONLINE)."""
    resp = stack.admin.get(
        "/v2/manage/events", params={"kind": "loadbalancer.operating_status", "limit": 1000}
    )
    events = resp.json().get("events", [])
    return len(
        {e["load_balancer_id"] for e in events if e["message"].endswith("-> ERROR")} & set(lb_ids)
    )


def run_interval(interval: float, count: int, steps: int) -> dict[str, Any]:
    out: dict[str, Any] = {"interval": interval, "runs": {}, "breakdown": {}}
    with bench_stack(agents=1, controller_interval=interval) as (lab, stack):
        backends = [FastBackend(lab, f"web{i}") for i in range(1, 4)]
        with Probe(lab, interval=0.005, timeout=0.25) as probe, ControllerTimeline() as tl:
            # One warm-up create so imports, template compilation and caches are not timed.
            measure(stack, probe, backends, "graph", 0)
            all_runs: list[Run] = []
            for kind, n in (("graph", count), ("steps", steps)):
                runs = []
                for i in range(1, n + 1):
                    decorrelate(interval)
                    runs.append(measure(stack, probe, backends, kind, i))
                out["runs"][kind] = runs
                out["breakdown"][kind] = breakdown(runs, tl)
                all_runs += runs
            first, last = all_runs[:5], all_runs[-5:]
            out["loop"] = [
                (
                    f"{name} with {lo}-{hi} LBs",
                    percentile(tl.pass_seconds(name, rs[0].t0, rs[-1].first_byte), 50),
                    percentile(tl.pass_seconds(name, rs[0].t0, rs[-1].first_byte), 90),
                )
                for name in ("observe_due", "tick")
                for rs, lo, hi in ((first, 1, 6), (last, len(all_runs) - 4, len(all_runs) + 1))
            ]
            out["check"] = haproxy_check_seconds(stack)
            ids = [r.lb_id for r in all_runs]
            out["flaps"] = (error_flaps(stack, ids), len(ids))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20, help="graph creates per interval")
    parser.add_argument("--steps", type=int, default=10, help="step-by-step creates per interval")
    parser.add_argument(
        "--intervals",
        default=f"{DEFAULT_CONTROLLER_INTERVAL:g}",
        help="controller intervals to run with (comma-separated seconds; default: the "
        "product default)",
    )
    args = parser.parse_args()
    require_root()
    print(f"# create -> first byte ({machine_line()})\n", flush=True)
    rows = []
    details = []
    results = []
    for interval in dict.fromkeys(float(x) for x in args.intervals.split(",")):
        result = run_interval(interval, args.count, args.steps)
        results.append((interval, result))
        for kind, runs in result["runs"].items():
            fb = [r.first_byte - r.t0 for r in runs]
            act = [r.active - r.t0 for r in runs]
            target = f"{percentile(fb, 50) / TARGET_P50:.2f}x target" if kind == "graph" else ""
            rows.append(
                (
                    kind,
                    f"{interval:g}",
                    len(runs),
                    percentile(fb, 50),
                    percentile(fb, 90),
                    max(fb),
                    percentile(act, 50),
                    percentile(act, 90),
                    target,
                )
            )
            details.append((kind, interval, result["breakdown"][kind]))
    print_table(
        "Create -> first byte through the VIP (seconds)",
        ["create", "controller interval s", "n", "first byte p50", "p90", "max",
         "ACTIVE p50", "ACTIVE p90", "p50 / 1 s target"],
        rows,
    )  # fmt: skip
    for kind, interval, steps in details:
        print_table(
            f"Where the time goes: {kind} create, controller interval {interval:g} s (medians)",
            ["step", "seconds"],
            steps,
        )
    for interval, result in results:
        print_table(
            f"Controller passes, interval {interval:g} s (`observe_due` derives the statuses "
            "of LBs whose health changed, in its own thread every observe_interval; `tick` "
            "starts the reconciles of due LBs)",
            ["pass", "p50 s", "p90 s"],
            result["loop"],
        )
        flapped, total = result["flaps"]
        print(
            f"- `haproxy -c` on a rendered config: {result['check']:.3f} s (median of 5)\n"
            f"- LBs whose operating_status passed through ERROR while being created: "
            f"{flapped} of {total}\n",
            flush=True,
        )


if __name__ == "__main__":
    main()
