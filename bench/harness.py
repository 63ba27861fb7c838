"""Shared machinery for the benchmarks in bench/: a whole OpenHA, fast backends, probes, tables.

A benchmark builds everything it measures and removes all of it, even on failure
or Ctrl-C / SIGTERM:

    with bench_stack(agents=1) as (lab, stack):
        backends = [FastBackend(lab, f"web{i}") for i in range(3)]
        with Probe(lab) as probe:
            probe.target(f"http://{vip}/")
            ...

`bench_stack` reuses the integration tests' `Stack` (API + controller threads, real
`openha agent` processes) on a lab bridge. `FastBackend` is a HAProxy that answers
200 itself, so backends never limit what is measured. `Probe` is a separate process
in a client namespace that sends one request per fresh connection in a loop and
reports each outcome with CLOCK_MONOTONIC timestamps, which compare directly with
`time.monotonic()` here: a separate process, so the API and controller threads of
this one cannot delay its observations.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from agent_support import AgentProcess as AgentProcess  # noqa: E402  (for bench/density.py)
from agent_support import FakeAPI as FakeAPI  # noqa: E402
from stack import Stack, wait_for  # noqa: E402

from openha.agent.netns import NamespaceExec  # noqa: E402
from openha.lab import Lab  # noqa: E402
from openha.settings import Settings  # noqa: E402

# What `openha controller` runs with unless configured otherwise: the figures users get.
DEFAULT_CONTROLLER_INTERVAL = float(Settings.model_fields["controller_interval"].default)
DEFAULT_OBSERVE_INTERVAL = float(Settings.model_fields["observe_interval"].default)
DEFAULT_HOST_DOWN_AFTER = float(Settings.model_fields["host_down_after"].default)
PROBE_SCRIPT = Path(__file__).resolve().parent / "probe.py"


def require_root() -> None:
    if os.geteuid() != 0:
        sys.exit("benchmarks need root (network namespaces, veths, real HAProxy)")


def _raise_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so every `finally` (namespaces, processes) runs.

    Only in this process: a forked child (pyroute2 forks one to create each namespace,
    and stops it with SIGTERM) carries a copy of our stack, and unwinding it there
    would run our cleanup (removing the stack's directory) under the living parent.
    """
    owner = os.getpid()

    def handler(signum: int, frame: object) -> None:
        if os.getpid() != owner:
            os._exit(128 + signum)
        raise SystemExit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


@contextlib.contextmanager
def bench_stack(
    agents: int = 1,
    controller_interval: float | None = None,
    host_down_after: float | None = None,
    agent_env: dict[str, str] | None = None,
) -> Iterator[tuple[Lab, Stack]]:
    """A lab bridge and a whole OpenHA with `agents` agent processes; all removed on exit.

    `agent_env` adds settings (OPENHA_* variables) to every agent's environment.

    `controller_interval`, the status sweep's `observe_interval` and `host_down_after`
    default to the product defaults (read from `Settings`, not the integration tests'
    0.3 s sweep and 3 s host-down delay), so the figures are what a deployment with
    default settings gets (agents heartbeat every 0.5 s, as in the tests).
    """
    _raise_on_sigterm()
    with Lab() as lab:
        stack = Stack(
            lab,
            host_down_after=DEFAULT_HOST_DOWN_AFTER if host_down_after is None else host_down_after,
        )
        try:
            # The reconcile and observe loops read their intervals on every pass (the
            # observer's first wait, begun when Stack started it, keeps the tests' value).
            stack.settings.controller_interval = (
                DEFAULT_CONTROLLER_INTERVAL if controller_interval is None else controller_interval
            )
            stack.settings.observe_interval = DEFAULT_OBSERVE_INTERVAL
            for _ in range(agents):
                stack.add_agent(env=agent_env)
            yield lab, stack
        finally:
            # Controller first: agents stopping under a running controller would be
            # declared down and their load balancers rescheduled during the teardown.
            stack.stop_controller.set()
            stack.close()


# --- backends ----------------------------------------------------------------------------


def _listening(pid: int, port: int) -> bool:
    """Whether `pid`'s network namespace has a TCP socket listening on `port`."""
    try:
        lines = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
            return True
    return False


class HAProxyProcess:
    """A foreground HAProxy (`-db`) run inside a namespace from a config text."""

    def __init__(self, namespace: str, config: str, name: str, port: int) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"ohb-{name}-", dir="/tmp"))
        self.cfg = self.dir / "haproxy.cfg"
        self.cfg.write_text(config)
        self.log = open(self.dir / "stderr", "wb")  # noqa: SIM115 - closed in close()
        with NamespaceExec(namespace) as nsexec:
            self.proc = subprocess.Popen(
                ["haproxy", "-db", "-f", str(self.cfg)],
                stdin=subprocess.DEVNULL,
                stdout=self.log,
                stderr=subprocess.STDOUT,
                preexec_fn=nsexec,
            )
        try:
            wait_for(
                lambda: self.proc.poll() is not None or _listening(self.proc.pid, port),
                10,
                0.02,
                what=f"haproxy {name} listening",
            )
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"haproxy {name} exited: {(self.dir / 'stderr').read_text()[-2000:]}"
                )
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


HAND_CFG = """\
global
    maxconn {maxconn}
{global_extra}
defaults
    mode http
    timeout connect 5s
    timeout client 50s
    timeout server 50s
{defaults_extra}
frontend fe
    bind {bind}
{frontend_extra}
    default_backend be
backend be
    balance roundrobin
{servers}
"""


def hand_config(
    bind: str,
    backends: Sequence[FastBackend],
    *,
    maxconn: int,
    nbthread: int | None = None,
    global_extra: str = "",
    defaults_extra: str = "",
    frontend_extra: str = "",
) -> str:
    """The minimal haproxy.cfg a person would write in front of `backends`: the baseline
    OpenHA's listeners are measured against (the extras add what a contender compares,
    such as logging or TLS, written the same way by hand)."""
    threads = f"    nbthread {nbthread}" if nbthread else ""
    cfg = HAND_CFG.format(
        maxconn=maxconn,
        global_extra="\n".join(part for part in (threads, global_extra) if part),
        defaults_extra=defaults_extra,
        bind=bind,
        frontend_extra=frontend_extra,
        servers="\n".join(f"    server {b.name} {b.address}" for b in backends),
    )
    return "\n".join(line for line in cfg.splitlines() if line) + "\n"


class RemoveDir:
    """A lab closer that removes a benchmark's scratch directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = path

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


FAST_BACKEND_CFG = """\
global
    maxconn 4000
    nbthread {threads}
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend answer
    bind {ip}:{port}
    http-request return status 200 content-type text/plain string ok hdr x-backend {name}
"""


class FastBackend:
    """A member that answers `200 ok` (header `x-backend: <name>`) from HAProxy itself."""

    def __init__(
        self, lab: Lab, name: str, ip: str | None = None, port: int = 8080, threads: int = 1
    ) -> None:
        self.name = name
        self.ip = ip or lab.allocate_ip()
        self.port = port
        self.namespace = lab.add_namespace(name, self.ip)
        cfg = FAST_BACKEND_CFG.format(ip=self.ip, port=port, name=name, threads=threads)
        self.haproxy = HAProxyProcess(self.namespace, cfg, name, port)
        lab.on_close(self)

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    def close(self) -> None:
        self.haproxy.close()


def tune_client_namespace(namespace: str) -> None:
    """Make an unanswered ARP fail fast, so probes see a new address within ~10 ms.

    By default a neighbour entry waits a second between ARP retries: a connect to a
    VIP that appears meanwhile would only succeed up to a second later, and that
    second would be charged to OpenHA.
    """
    for key, value in (("retrans_time_ms", "10"), ("mcast_solicit", "3")):
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                namespace,
                "sysctl",
                "-qw",
                f"net.ipv4.neigh.eth0.{key}={value}",
            ],
            check=True,
        )


# --- probe ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One probe request: monotonic start/end, HTTP status (0 = failed), backend or error."""

    start: float
    end: float
    status: int
    backend: str
    url: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 400


class Probe:
    """A client loop in its own process and namespace (see bench/probe.py).

    `target(url)` points it at a URL (None pauses it); `samples(since)` returns what
    it saw. Samples are kept in memory: a benchmark run is short.
    """

    def __init__(
        self,
        lab: Lab,
        name: str = "probe",
        interval: float = 0.005,
        timeout: float = 0.5,
    ) -> None:
        self.namespace = lab.add_namespace(name, lab.allocate_ip())
        tune_client_namespace(self.namespace)
        self._samples: list[Sample] = []
        self._lock = threading.Lock()
        cmd = [
            sys.executable, str(PROBE_SCRIPT),
            "--interval", str(interval), "--timeout", str(timeout),
        ]  # fmt: skip
        with NamespaceExec(self.namespace) as nsexec:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                bufsize=1,
                preexec_fn=nsexec,
            )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        lab.on_close(self)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            sample = Sample(rec["s"], rec["e"], rec["st"], rec["b"], rec["u"])
            with self._lock:
                self._samples.append(sample)

    def target(self, url: str | None) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((url or "-") + "\n")
        self.proc.stdin.flush()

    def samples(self, since: float = 0.0, url: str | None = None) -> list[Sample]:
        with self._lock:
            return [s for s in self._samples if s.start >= since and (url is None or s.url == url)]

    def clear(self) -> None:
        with self._lock:
            self._samples.clear()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(Exception):
                stream.close()  # type: ignore[union-attr]

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- figures ----------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) by linear interpolation; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "max": max(values) if values else float("nan"),
        "mean": statistics.fmean(values) if values else float("nan"),
    }


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Print (and return) a Markdown table, so results paste into bench/README.md."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 10 else f"{v:,.0f}"
        return str(v)

    lines = [
        f"### {title}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(cell(v) for v in row) + " |" for row in rows),
        "",
    ]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def haproxy_version() -> str:
    out = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout
    match = re.search(r"version (\S+)", out)
    return match.group(1) if match else "?"


def machine_line() -> str:
    # The load average says whether something else shared the machine during the run.
    return (
        f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, {platform.machine()}, "
        f"kernel {platform.release()}, HAProxy {haproxy_version()}, "
        f"load average {os.getloadavg()[0]:.2f} at start"
    )


def decorrelate(interval: float) -> None:
    """Sleep a random part of two controller periods before the next measured change.

    Changes made at a fixed cadence after the previous one completes would land at
    the same phase of the reconcile loop every time, and the measured pick-up delay
    would be that phase, not the average a user sees.
    """
    time.sleep(random.uniform(0, 2 * interval))


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.monotonic()
    value = fn()
    return time.monotonic() - start, value


# --- where the time goes -------------------------------------------------------------------


class ControllerTimeline:
    """Timestamps of the controller's steps per LB, by wrapping them in this process.

    Instrumentation only (the wrapped functions behave as before): reconcile start/end,
    the provider's apply (placement + render + push), each push to an agent (= the
    agent's whole apply, as the controller waits for its answer) and finalize.
    """

    def __init__(self) -> None:
        self.events: dict[str, list[tuple[str, float]]] = {}
        # Whole-loop work: (start, seconds) of every reconcile pass and status sweep.
        self.passes: dict[str, list[tuple[float, float]]] = {"tick": [], "observe_due": []}
        self._lock = threading.Lock()
        self._undo: list[Callable[[], None]] = []

    def mark(self, lb_id: str, name: str) -> None:
        with self._lock:
            self.events.setdefault(lb_id, []).append((name, time.monotonic()))

    def first(self, lb_id: str, name: str, after: float = 0.0) -> float | None:
        with self._lock:
            return next(
                (t for n, t in self.events.get(lb_id, []) if n == name and t >= after), None
            )

    def _wrap(self, owner: Any, attr: str, lb_of: Callable[..., str], label: str) -> None:
        original = getattr(owner, attr)
        timeline = self

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            lb_id = lb_of(*args, **kwargs)
            timeline.mark(lb_id, f"{label}.start")
            try:
                return original(*args, **kwargs)
            finally:
                timeline.mark(lb_id, f"{label}.end")

        setattr(owner, attr, wrapper)
        self._undo.append(lambda: setattr(owner, attr, original))

    def _time(self, owner: Any, attr: str) -> None:
        original = getattr(owner, attr)
        record = self.passes[attr]

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.monotonic()
            try:
                return original(*args, **kwargs)
            finally:
                record.append((start, time.monotonic() - start))

        setattr(owner, attr, wrapper)
        self._undo.append(lambda: setattr(owner, attr, original))

    def pass_seconds(
        self, name: str, since: float = 0.0, until: float = float("inf")
    ) -> list[float]:
        return [d for t, d in self.passes[name] if since <= t <= until]

    def __enter__(self) -> ControllerTimeline:
        from openha.controller.observer import Observer
        from openha.controller.reconciler import Reconciler
        from openha.providers.haproxy import agent_client
        from openha.providers.haproxy.driver import HAProxyProvider

        self._time(Reconciler, "tick")
        self._time(Observer, "observe_due")

        self._wrap(Reconciler, "reconcile", lambda self_, lb_id: lb_id, "reconcile")
        self._wrap(Reconciler, "finalize", lambda self_, lb_id, gen: lb_id, "finalize")
        self._wrap(HAProxyProvider, "apply", lambda self_, spec, **_: spec.id, "apply")
        self._wrap(agent_client, "put_instance", lambda agent, spec: spec.load_balancer_id, "push")
        return self

    def __exit__(self, *exc: object) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
