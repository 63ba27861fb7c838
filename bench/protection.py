"""Benchmark: what a protection profile costs, and what it buys under a flood.

Two LBs made through the API on one agent, same three fast backends (HAProxy answering
200 itself), access_log "none" (so logging does not blur the figure):
- `protected`: an operator's protection profile (every per-source table, map lookup
  and rule of the frame, deny/allow lists of 1,000 entries each, a path limit, header
  limits, slowloris timeout) whose limits are far above what the benchmark client
  sends, so the rules all run and none trips;
- `none`: no profile.
1. Throughput: wrk `-t2 -c50 -d10s` from one client namespace, the two LBs alternately
   for `--rounds` rounds; medians and the ratio protected / none (target >= 0.95).
2. Flood: the protected LB switched to a strict profile (`request_rate` per 10 s) by
   under-attack mode (`POST .../protect`); a flood namespace runs wrk at full speed for
   `--flood-seconds` while a polite namespace sends a request every 0.2 s; the polite
   client's success rate and p99 latency against its own idle run just before (target
   >= 99 %, p99 <= 2x idle), and the flood's answers (429s).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import threading
import time
from typing import Any

from harness import FastBackend, Stack, bench_stack, machine_line, print_table, require_root
from pyroute2 import netns
from throughput import WrkResult, instance_dir, openha_lb, wrk

TARGET_RATIO = 0.95
TARGET_POLITE = 0.99


def _flavor(stack: Stack) -> str:
    profile = stack.admin.post(
        "/v2/lbaas/flavorprofiles",
        json={
            "flavorprofile": {
                "name": "bench-protect",
                "provider_name": "haproxy",
                "flavor_data": json.dumps({"access_log": "none"}),
            }
        },
    )
    assert profile.status_code == 201, profile.text
    flavor = stack.admin.post(
        "/v2/lbaas/flavors",
        json={
            "flavor": {
                "name": "bench-protect",
                "flavor_profile_id": profile.json()["flavorprofile"]["id"],
            }
        },
    )
    assert flavor.status_code == 201, flavor.text
    return str(flavor.json()["flavor"]["id"])


def _profile(stack: Stack, name: str, **fields: Any) -> None:
    resp = stack.admin.post(
        "/v2/manage/protection-profiles", json={"protection_profile": {"name": name, **fields}}
    )
    assert resp.status_code == 201, resp.text


def _applied(stack: Stack, lb_id: str) -> None:
    from openha.models import Instance, LoadBalancer

    def done() -> bool:
        with stack.sessions() as s:
            lb = s.get(LoadBalancer, lb_id)
            gens = [
                i.applied_generation
                for i in s.query(Instance).filter(Instance.load_balancer_id == lb_id)
            ]
            return lb is not None and bool(gens) and min(gens) >= lb.desired_generation

    deadline = time.monotonic() + 30
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("generation not applied")
        time.sleep(0.1)


def _polite(namespace: str, vip: str, seconds: float, interval: float) -> list[float | None]:
    """Latency of each request (None: failed), one per `interval`, from inside `namespace`."""
    out: list[float | None] = []

    def run() -> None:
        netns.setns(namespace, flags=0)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            started = time.monotonic()
            ok = False
            try:
                with socket.create_connection((vip, 80), timeout=2) as sock:
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n")
                    ok = sock.recv(64).startswith(b"HTTP/1.1 200")
            except OSError:
                pass
            out.append(time.monotonic() - started if ok else None)
            time.sleep(max(0.0, interval - (time.monotonic() - started)))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(seconds + 30)
    return out


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000 if ordered else 0.0


def run(args: argparse.Namespace) -> None:
    with bench_stack(agents=1) as (lab, stack):
        backends = [FastBackend(lab, f"web{i}") for i in range(1, 4)]
        flavor = _flavor(stack)
        high = 10_000_000 // 10  # per 10 s: far above what wrk sends from one source
        _profile(
            stack,
            "bench-default",
            max_connections=1000,
            connection_rate=high,
            request_rate=high,
            error_rate=high,
            timeout_http_request=5000,
            max_header_bytes=16384,
            max_header_count=100,
            deny=[f"10.{i // 256}.{i % 256}.0/24" for i in range(1000)],
            allow=[f"172.{16 + i // 256}.{i % 256}.1" for i in range(1000)],
            path_limits=[{"path_prefix": "/login", "request_rate": 100}],
        )
        _profile(stack, "bench-attack", request_rate=args.flood_limit)
        lbs = {
            "protected": openha_lb(stack, backends, "bench-protected", flavor),
            "none": openha_lb(stack, backends, "bench-none", flavor),
        }
        put = stack.admin.put(
            f"/v2/manage/loadbalancers/{lbs['protected']['id']}/protection",
            json={"profile": "bench-default"},
        )
        assert put.status_code == 200, put.text
        _applied(stack, lbs["protected"]["id"])
        cfg = (instance_dir(stack, lbs["protected"]["id"]) / "haproxy.cfg").read_text()
        assert "openha_protect" in cfg
        client = lab.add_namespace("wrk", lab.allocate_ip())
        urls = {name: f"http://{lb['vip_address']}/" for name, lb in lbs.items()}
        for url in urls.values():
            wrk(client, url, args.warmup, 2, 50)
        results: dict[str, list[WrkResult]] = {name: [] for name in lbs}
        for round_ in range(args.rounds):
            order = list(lbs) if round_ % 2 == 0 else list(reversed(lbs))
            for name in order:
                results[name].append(wrk(client, urls[name], args.seconds, 2, 50))
        rows = []
        for name in lbs:
            rps = statistics.median(r.rps for r in results[name])
            p99 = statistics.median(r.p99_ms for r in results[name])
            errors = sum(r.errors for r in results[name])
            rows.append([name, f"{rps:,.0f}", f"{p99:.2f}", errors])
        ratio = statistics.median(r.rps for r in results["protected"]) / statistics.median(
            r.rps for r in results["none"]
        )
        print(machine_line())
        print_table(
            f"Throughput, wrk -t2 -c50 -d{args.seconds}s, median of {args.rounds} rounds",
            ["LB", "req/s", "p99 ms", "errors"],
            rows,
        )
        print(f"ratio protected / none: {ratio:.3f} (target >= {TARGET_RATIO})\n")

        # Under a flood: a strict profile by under-attack mode, a flooder and a polite client.
        lb_id = lbs["protected"]["id"]
        vip = lbs["protected"]["vip_address"]
        polite_ns = lab.add_namespace("polite", lab.allocate_ip())
        flood_ns = lab.add_namespace("flood", lab.allocate_ip())
        on = stack.admin.post(
            f"/v2/manage/loadbalancers/{lb_id}/protect", json={"profile": "bench-attack"}
        )
        assert on.status_code == 202, on.text
        _applied(stack, lb_id)
        idle = _polite(polite_ns, vip, args.flood_seconds / 2, 0.2)
        box: list[WrkResult] = []
        flooder = threading.Thread(
            target=lambda: box.append(wrk(flood_ns, urls["protected"], args.flood_seconds, 2, 50))
        )
        flooder.start()
        time.sleep(1.0)
        loaded = _polite(polite_ns, vip, args.flood_seconds - 2, 0.2)
        flooder.join(args.flood_seconds + 60)
        flood = box[0]
        ok_idle = [v for v in idle if v is not None]
        ok_loaded = [v for v in loaded if v is not None]
        success = len(ok_loaded) / len(loaded) if loaded else 0.0
        print_table(
            f"Under a flood (limit {args.flood_limit} requests per source per 10 s, "
            f"flood wrk -t2 -c50 for {args.flood_seconds}s)",
            ["client", "requests", "succeeded", "p99 ms"],
            [
                ["polite, idle", len(idle), len(ok_idle), f"{_p99(ok_idle):.2f}"],
                ["polite, under flood", len(loaded), len(ok_loaded), f"{_p99(ok_loaded):.2f}"],
            ],
        )
        # wrk counts a 429 and a socket error alike as an error: the answered rate, and
        # the errors, say how much of the flood was turned away.
        print(
            f"flood: {flood.rps:,.0f} answers/s for {args.flood_seconds} s, "
            f"{flood.errors:,} non-2xx answers or socket errors, p99 {flood.p99_ms:.2f} ms"
        )
        print(
            f"polite success under flood: {success:.1%} (target >= {TARGET_POLITE:.0%}); "
            f"p99 {_p99(ok_loaded):.2f} ms vs idle {_p99(ok_idle):.2f} ms\n"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--flood-seconds", type=int, default=12)
    parser.add_argument("--flood-limit", type=int, default=100)
    args = parser.parse_args()
    require_root()
    run(args)


if __name__ == "__main__":
    main()
