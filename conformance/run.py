"""`make conformance`: send one scripted scenario to the real Octavia and to OpenHA, compare.

Starts both servers (see `servers`), prepares what only OpenHA needs (a network
and subnet: Octavia's no-op network driver accepts any subnet id, so both are
given OpenHA's), runs every step of `scenario.steps()` against each server in
turn, waits after every write until no load balancer is PENDING_* on that
server (Octavia answers 409 to a change while one is), and compares the two
answers (see `compare`). Prints the differences grouped, how many requests
were compared, and exits 1 when anything differs beyond the differences kept
on purpose (`accepted`).

    .venv/bin/python -m conformance.run [--keep] [--verbose]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

from conformance import compare, scenario, servers
from conformance.accepted import accepted
from conformance.steps import PROJECT, Step

PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_.\-]+)\}")
WAIT_TIMEOUT = 60.0


def _headers(step: Step) -> dict[str, str]:
    # Octavia's noauth makes every caller an admin (octavia/common/context.py);
    # OpenHA's noauth reads the roles from X-Roles.
    return {"X-Project-Id": PROJECT, "X-Roles": "admin"} | step.headers


def _fill(value: Any, server: servers.Server) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, server) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, server) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "provider":
            return server.provider
        if name not in server.aliases:
            return match.group(0)  # a literal brace in a value, or a failed create
        return server.aliases[name]

    return PLACEHOLDER.sub(one, value)


def _register_nested(server: servers.Server, alias: str, value: Any, path: str = "") -> None:
    if isinstance(value, dict):
        ident = value.get("id")
        if isinstance(ident, str) and compare.UUID.fullmatch(ident):
            name = f"{alias}{path}"
            if name not in server.aliases and ident not in server.aliases.values():
                server.aliases[name] = ident
        for key, item in value.items():
            if isinstance(item, dict | list):
                _register_nested(server, alias, item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _register_nested(server, alias, item, f"{path}.{i}")


def _register(server: servers.Server, step: Step, status: int, body: Any) -> None:
    if not step.register or status >= 300 or not isinstance(body, dict) or len(body) < 1:
        return
    if step.method == "POST" and step.path == scenario.LB:
        server.load_balancers.append(step.register)
    envelope = next(iter(body.values()))
    if step.register_items and isinstance(envelope, list):
        for i, item in enumerate(envelope):
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                server.aliases.setdefault(f"{step.register}.{i}", item["id"])
        return
    if isinstance(envelope, dict):
        ident = envelope.get("id")
        if isinstance(ident, str):
            server.aliases[step.register] = ident
        _register_nested(server, step.register, envelope)


def _wait_all(client: httpx.Client, server: servers.Server) -> None:
    for alias in list(server.load_balancers):
        if _wait(client, server, alias) == "gone":
            server.load_balancers.remove(alias)


def _wait(client: httpx.Client, server: servers.Server, lb_alias: str) -> str:
    """Poll until the load balancer is not PENDING_*; returns its last state."""
    lb_id = server.aliases[lb_alias]
    deadline = time.monotonic() + WAIT_TIMEOUT
    state = "?"
    while time.monotonic() < deadline:
        r = client.get(
            f"{server.base}/v2/lbaas/loadbalancers/{lb_id}",
            headers={"X-Project-Id": PROJECT, "X-Roles": "admin"},
        )
        if r.status_code == 404:
            return "gone"
        state = r.json()["loadbalancer"]["provisioning_status"]
        if state == "DELETED":
            return "gone"
        if not state.startswith("PENDING_"):
            return state
        time.sleep(0.2)
    raise SystemExit(f"{server.name}: load balancer {lb_alias} still {state} after {WAIT_TIMEOUT}s")


def _send(client: httpx.Client, server: servers.Server, step: Step) -> tuple[int, Any, str]:
    path = _fill(step.path, server)
    body = _fill(step.body, server)
    kwargs: dict[str, Any] = {"headers": _headers(step)}
    if body is not None:
        kwargs["content"] = body if isinstance(body, str) else json.dumps(body)
        kwargs["headers"] = kwargs["headers"] | {"Content-Type": "application/json"}
    r = client.request(step.method, server.base + path, **kwargs)
    try:
        parsed: Any = r.json() if r.content else None
    except ValueError:
        parsed = {"<non-JSON body>": r.text[:200]}
    _register(server, step, r.status_code, parsed)
    return r.status_code, parsed, path


def prepare_openha(client: httpx.Client, openha: servers.Server) -> str:
    """A network and subnet in OpenHA; Octavia's no-op driver accepts the same id."""
    headers = {"X-Project-Id": PROJECT, "X-Roles": "admin"}
    net = client.post(
        f"{openha.base}/v2.0/networks",
        headers=headers,
        json={
            "network": {
                "name": "conformance",
                "shared": True,
                "provider:network_type": "flat",
                "provider:physical_network": "ohconf0",
            }
        },
    )
    net.raise_for_status()
    sub = client.post(
        f"{openha.base}/v2.0/subnets",
        headers=headers,
        json={
            "subnet": {
                "name": "conformance",
                "network_id": net.json()["network"]["id"],
                "cidr": "198.51.100.0/24",
                # Octavia's no-op network driver hands out 198.51.100.1 when no
                # address is asked for: let OpenHA's first allocation be the same.
                "gateway_ip": None,
                "allocation_pools": [{"start": "198.51.100.1", "end": "198.51.100.254"}],
            }
        },
    )
    sub.raise_for_status()
    return str(sub.json()["subnet"]["id"])


def run(steps: list[Step], octavia: servers.Server, openha: servers.Server, verbose: bool) -> int:
    differences: list[compare.Difference] = []
    compared = 0
    with httpx.Client(timeout=60) as client:
        subnet = prepare_openha(client, openha)
        for server in (octavia, openha):
            server.aliases["subnet"] = subnet
        for number, step in enumerate(steps, 1):
            answers = []
            for server in (octavia, openha):
                status, body, _ = _send(client, server, step)
                if step.method != "GET":
                    _wait_all(client, server)
                norm = compare.Normaliser(server.base, server.provider, server.aliases)
                answers.append((status, norm.body(body)))
            request = f"{step.method} {step.path}"
            found = compare.diff(step.label, request, answers[0], answers[1])
            if step.shape_only:
                found = [d for d in found if d.kind not in ("value", "length")]
            compared += 1
            differences.extend(found)
            mark = "ok " if not found else f"{len(found):>3}"
            if verbose or found:
                statuses = f"{answers[0][0]}/{answers[1][0]}"
                print(f"[{mark}] {number:>3} {step.label}: {request} ({statuses})", flush=True)
            if step.register and answers[0][0] >= 300 and answers[1][0] >= 300:
                print(f"        scenario: nothing was created for {step.register!r}")
            if verbose and (answers[0][0] >= 400 or answers[1][0] >= 400):
                for server, (status, body) in zip((octavia, openha), answers, strict=True):
                    if status >= 400:
                        print(f"        {server.name} says: {_short(body)}")
            if verbose:
                for d in found:
                    print(f"        {d.kind} {d.path}: octavia={d.octavia!r} openha={d.openha!r}")
    return report(differences, compared)


def report(found: list[compare.Difference], compared: int) -> int:
    kept = [(d, a) for d in found if (a := accepted(d)) is not None]
    differences = [d for d in found if accepted(d) is None]
    groups: dict[tuple[str, str], list[compare.Difference]] = defaultdict(list)
    for d in differences:
        # Group by what differs, whatever the request: "missing loadbalancer.tenant_id".
        path = re.sub(r"^[a-z_]+s\[\]", "<list>[]", d.path)
        groups[(d.kind, path)].append(d)
    print()
    if kept:
        print(f"Kept on purpose ({len(kept)} differences, conformance/accepted.py):")
        for reason in dict.fromkeys(a.reason for _, a in kept):
            steps = sorted({d.step for d, a in kept if a.reason == reason})
            print(f"- {', '.join(steps)}: {reason}")
        print()
    print(f"Compared {compared} requests: {len(differences)} differences in {len(groups)} groups.")
    for (kind, path), items in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        first = items[0]
        steps = sorted({d.step for d in items})
        print(f"- {kind:<7} {path or '(status)'}: {len(items)}x, e.g. {first.request!r}")
        print(f"          octavia={_short(first.octavia)} openha={_short(first.openha)}")
        print(f"          in: {', '.join(steps[:4])}{' ...' if len(steps) > 4 else ''}")
    return 1 if differences else 0


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the state directory")
    parser.add_argument("--verbose", "-v", action="store_true", help="print every step")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="openha-conformance-"))
    octavia = openha = None
    code = 2
    try:
        octavia = servers.start_octavia(state)
        openha = servers.start_openha(state)
        servers.wait_ready(openha)
        servers.wait_ready(octavia)
        code = run(scenario.steps(), octavia, openha, args.verbose)
    finally:
        for server in (openha, octavia):
            if server is not None:
                server.stop()
        if args.keep or code == 2:
            print(f"state and logs kept in {state}", file=sys.stderr)
        else:
            shutil.rmtree(state, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
