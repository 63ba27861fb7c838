"""What authorisation costs a request: Octavia's policy (oslo.policy) and Keystone mode.

One API (uvicorn on loopback, in this process, SQLite, the noop provider) serves one
load balancer; a client sends `GET /v2/lbaas/loadbalancers/{id}` back to back on a
kept-alive connection, `--requests` per round, contenders taking turns for
`--rounds` rounds so that a busy machine weighs on them alike:

- `noauth, policy asked every time`: the caller's project and roles from headers,
  every policy decision asked of oslo.policy (`Policy(remember=False)`, as before);
- `noauth`: the same, decisions remembered (what OpenHA runs): the baseline;
- `keystone`: a real Keystone's token (`conformance.keystone`, `.venv-keystone`),
  validated by keystonemiddleware (then cached by it), the same remembered policy.

Then the decisions themselves, without HTTP: `Policy.allowed` asked and remembered,
per call. Prints Markdown tables; everything it made goes with its temporary
directory.

    .venv/bin/python bench/policy.py [--requests 300] [--rounds 3] [--no-keystone]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from conformance import keystone as harness  # noqa: E402
from conformance.tempest import SERVICE_PASSWORD, register_openha, vip_network  # noqa: E402

from openha.api.app import bind, create_app  # noqa: E402
from openha.api.policy import Policy  # noqa: E402
from openha.db import make_engine, make_session_factory, upgrade  # noqa: E402
from openha.settings import Settings  # noqa: E402

RULE = "os_load-balancer_api:loadbalancer:get_one"
PROJECT = "bench-project"


@dataclass
class Contender:
    name: str
    settings: Settings
    remember: bool
    headers: dict[str, str]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the API did not start")
        time.sleep(0.05)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def latencies(client: httpx.Client, url: str, headers: dict[str, str], count: int) -> list[float]:
    out = []
    for _ in range(count):
        start = time.perf_counter()
        resp = client.get(url, headers=headers)
        out.append(time.perf_counter() - start)
        if resp.status_code != 200:
            raise RuntimeError(f"{resp.status_code} {resp.text[:300]}")
    return out


def per_call(fn: Callable[[], Any], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        fn()
    return (time.perf_counter() - start) / count


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=2000, help="Policy.allowed calls")
    parser.add_argument("--no-keystone", action="store_true", help="skip the keystone contender")
    args = parser.parse_args()
    header = (
        f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, {platform.machine()}, "
        f"load average {os.getloadavg()[0]:.2f} at start"
    )
    tmp = Path(tempfile.mkdtemp(prefix="openha-bench-policy-"))
    try:
        with contextlib.ExitStack() as stack:
            url = f"sqlite:///{tmp / 'openha.db'}"
            upgrade(url)
            sessions = make_session_factory(make_engine(url))
            base_settings = Settings(
                state_dir=tmp / "state", database_url=url, auth="noauth", default_provider="noop"
            )
            app = create_app(base_settings, sessions)
            base = stack.enter_context(serving(app))
            project = PROJECT
            keystone: Contender | None = None
            if not args.no_keystone and harness.available():
                ks = stack.enter_context(harness.Keystone.started(tmp / "keystone"))
                admin = register_openha(ks, base)
                domain = admin.domain_id("Default")
                project = admin.project("bench", domain)
                user = admin.user("bench-member", "bench-secret", domain, project)
                admin.grant(project, user, admin.role("member"))
                token = admin.issue("bench-member", "bench-secret", "bench")
                admin.close()
                keystone = Contender(
                    "keystone (token cached by keystonemiddleware), policy remembered",
                    base_settings.model_copy(
                        update={
                            "auth": "keystone",
                            "keystone_auth_url": ks.url,
                            "keystone_password": SERVICE_PASSWORD,
                        }
                    ),
                    True,
                    {"X-Auth-Token": token},
                )
            # The load balancer, in the project every contender reads it as.
            _, subnet = vip_network(base, "", {"X-Project-Id": "bench-admin", "X-Roles": "admin"})
            made = httpx.post(
                f"{base}/v2/lbaas/loadbalancers",
                json={"loadbalancer": {"vip_subnet_id": subnet, "project_id": project}},
                headers={"X-Project-Id": "bench-admin", "X-Roles": "admin"},
                timeout=30,
            )
            made.raise_for_status()
            target = f"{base}/v2/lbaas/loadbalancers/{made.json()['loadbalancer']['id']}"
            member = {"X-Project-Id": project, "X-Roles": "member"}
            contenders = [
                Contender("noauth, policy asked every time", base_settings, False, member),
                Contender("noauth, policy remembered (baseline)", base_settings, True, member),
            ] + ([keystone] if keystone else [])
            samples: dict[str, list[float]] = {c.name: [] for c in contenders}
            with httpx.Client(timeout=30) as client:
                for _ in range(args.rounds):
                    for c in contenders:
                        bind(app, c.settings, sessions)
                        app.state.policy = Policy(c.settings.policy_file, remember=c.remember)
                        latencies(client, target, c.headers, 20)  # warm: caches, connection
                        samples[c.name] += latencies(client, target, c.headers, args.requests)
            asked = Policy(remember=False)
            remembered = Policy()
            creds = remembered.credentials(project, ["member"], "u")
            calls = {
                "oslo.policy asked": per_call(
                    lambda: asked.allowed(RULE, project, creds), args.calls
                ),
                "remembered": per_call(
                    lambda: remembered.allowed(RULE, project, creds), args.calls
                ),
                "credentials (context_is_admin), asked": per_call(
                    lambda: asked.credentials(project, ["member"], "u"), args.calls
                ),
                "credentials (context_is_admin), remembered": per_call(
                    lambda: remembered.credentials(project, ["member"], "u"), args.calls
                ),
            }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    baseline = statistics.median(samples[contenders[1].name])
    print(f"# policy cost ({header})\n")
    print(
        f"### GET one load balancer, back to back ({args.rounds} rounds of {args.requests}"
        " requests per contender, turn about)\n"
    )
    print("| contender | p50 ms | p90 ms | p50 / baseline |")
    print("|---|---|---|---|")
    for c in contenders:
        values = sorted(samples[c.name])
        p50 = statistics.median(values)
        p90 = values[int(len(values) * 0.9)]
        print(f"| {c.name} | {ms(p50)} | {ms(p90)} | {p50 / baseline:.2f} |")
    print(f"\n### One decision (`{RULE}`, a member of the object's project), per call\n")
    print("| call | µs |")
    print("|---|---|")
    for name, seconds in calls.items():
        print(f"| {name} | {us(seconds)} |")


if __name__ == "__main__":
    main()
