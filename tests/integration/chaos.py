"""Fault injection: random SIGKILLs of every OpenHA process under a random workload, then proof
that everything converged and that every running HAProxy runs exactly what the database says.

`run_chaos` builds a lab (bridge, backends, a client namespace), then runs the API, the
controller and N agents as separate real processes (`openha api`, `openha controller`,
`openha agent`), restarted by a small supervisor (this module's main thread) after random
delays. A workload thread drives random creates, updates and deletes through the tenant
API while the chaos kills, at random moments, the API, the controller, an agent, an
agent armed with a named crash point (`openha.agent.faults`), one HAProxy, one keepalived
or a whole host (rebooted without its namespaces). Then the chaos stops and the checks run:

- every load balancer (and every child object) reaches ACTIVE, none stays PENDING_*;
- the instances the database knows are exactly those the agents' directories hold, each
  in its namespace, with its HAProxy (and, for a pair, keepalived) running;
- for every running HAProxy, its runtime state (`show servers state`, `show stat` over the
  stats socket) equals the desired state read from the API: frontends, backends, servers,
  addresses, ports, weights, MAINT versus READY (and the comparison is shown able to fail);
- traffic through each listener from the client namespace answers 200 when its pool has
  a member that may serve, else 503; members report what HAProxy does with them;
- after deleting everything: no instance directory, namespace, veth or process left.

The processes and lab are in chaos_procs.py, the workload in chaos_workload.py, the
checks in chaos_checks.py; this module kills, restarts and runs the whole. The run
prints its seed; `OPENHA_CHAOS_SEED` (or `--seed`) replays the same choices (the
timing of a loaded machine, of course, does not replay). `make soak` runs it for minutes
with ACTIVE_STANDBY pairs; `make test` runs a short version (test_chaos.py).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chaos_checks import (
    check_loaded,
    check_member_status,
    check_nothing_left,
    check_traffic,
    checker_sees_a_difference,
    eventually,
    instances,
    pairs_whole,
    settled,
)
from chaos_procs import HOST_DOWN_AFTER, ProcStack, log, world
from chaos_workload import Workload
from pyroute2 import netns
from stack import Agent, wait_for

from openha.agent import faults
from openha.agent.paths import namespace_name
from openha.agent.procs import children_of, pid_alive

SEED_ENV = "OPENHA_CHAOS_SEED"


@dataclass
class Options:
    seed: int
    duration: float  # seconds of chaos
    agents: int = 2
    max_lbs: int = 4
    pairs: bool = True  # ACTIVE_STANDBY load balancers in the workload (needs 2+ agents)
    kill_every: tuple[float, float] = (1.0, 4.0)  # seconds between kills
    converge_timeout: float = 120.0
    api_gap: float = 10.0  # seconds the API serves, at least, before it is killed again


def seed_from_env() -> int:
    value = os.environ.get(SEED_ENV)
    return int(value) if value else random.SystemRandom().randrange(1, 2**31)


# --- the chaos ---------------------------------------------------------------------------


@dataclass
class Pending:
    """A killed process waiting for its supervisor's restart."""

    at: float
    start: Callable[[], None]


@dataclass
class Chaos:
    """Kills processes at random moments; restarts them as a supervisor would."""

    stack: ProcStack
    rnd: random.Random
    opts: Options
    kills: Counter[str] = field(default_factory=Counter)
    pending: dict[str, Pending] = field(default_factory=dict)
    armed: dict[str, str] = field(default_factory=dict)  # agent name -> crash point
    api_serving_since: float | None = None

    def supervise(self) -> None:
        """Restart what died (after a random delay, as `openha up` or systemd would)."""
        now = time.monotonic()
        for name, svc in (("api", self.stack.api), ("controller", self.stack.controller)):
            if svc.proc is not None and svc.proc.poll() is not None and name not in self.pending:
                self.pending[name] = Pending(now + self.delay(), svc.spawn)
        for agent in self.stack.agents:
            proc = agent.proc
            if proc is not None and proc.poll() is not None and agent.name not in self.pending:
                if agent.name in self.armed:
                    self.kills[f"crash point {self.armed.pop(agent.name)} (reached)"] += 1
                self.pending[agent.name] = Pending(now + self.delay(), agent.spawn)
        for name, todo in list(self.pending.items()):
            if now >= todo.at:
                del self.pending[name]
                todo.start()

    def delay(self) -> float:
        # Mostly quick restarts; sometimes longer than host_down_after (a host "dies").
        if self.rnd.random() < 0.1:
            return self.rnd.uniform(HOST_DOWN_AFTER + 0.5, HOST_DOWN_AFTER + 3)
        return self.rnd.uniform(0.1, 1.5)

    # What the chaos kills, and how often relative to each other.
    VICTIMS = (
        ("api", 2.0),
        ("controller", 2.0),
        ("agent", 2.0),
        ("crash point", 2.0),
        ("haproxy", 2.0),
        ("keepalived", 1.0),
        ("host reboot", 0.5),
    )

    def strike(self) -> None:
        kind = self.rnd.choices([k for k, _ in self.VICTIMS], [w for _, w in self.VICTIMS])[0]
        now = time.monotonic()
        if self.api_serving_since is None and self.stack.api_up():
            self.api_serving_since = now
        if kind == "api":
            # Only an API that has served a while: a restart takes seconds on a loaded
            # machine, and a workload that never reaches the API would test nothing else.
            since = self.api_serving_since
            if since is not None and now - since > self.opts.api_gap and kill(self.stack.api.proc):
                self.kills[kind] += 1
                self.api_serving_since = None
        elif kind == "controller":
            if kill(self.stack.controller.proc):
                self.kills[kind] += 1
        elif kind == "agent":
            agent = self.rnd.choice(self.stack.agents)
            if kill(agent.proc):
                self.kills[kind] += 1
                self.armed.pop(agent.name, None)  # killed before reaching its crash point
        elif kind == "crash point":
            self.arm(self.rnd.choice(self.stack.agents))
        elif kind == "host reboot":
            self.reboot(self.rnd.choice(self.stack.agents))
        else:
            self.kill_data_plane(kind)

    def reboot(self, agent: Agent) -> None:
        """The host dies (agent, HAProxy, keepalived at once, links down) and boots again
        later: namespaces are gone, the agent's directory is not."""
        if agent.name in self.pending or agent.proc is None or agent.proc.poll() is not None:
            return
        self.armed.pop(agent.name, None)
        agent.kill_host()
        self.kills["host reboot"] += 1

        def boot() -> None:
            for d in agent.instance_dirs():
                with contextlib.suppress(Exception):
                    netns.remove(namespace_name(d.name))
            agent.spawn()

        self.pending[agent.name] = Pending(time.monotonic() + self.delay(), boot)

    def arm(self, agent: Agent) -> None:
        """Kill the agent and restart it at once with a crash point armed."""
        if agent.name in self.pending or agent.name in self.armed:
            return
        if not kill(agent.proc):
            return
        point = self.rnd.choice(sorted(faults.POINTS))
        self.armed[agent.name] = point
        self.kills[f"crash point {point} (armed)"] += 1
        agent.spawn(crash_at=point)

    def disarm(self) -> None:
        """The chaos is over: agents still armed restart without their crash point."""
        for agent in self.stack.agents:
            if self.armed.pop(agent.name, None) is not None and kill(agent.proc):
                agent.spawn()

    def kill_data_plane(self, kind: str) -> None:
        pid_file = "haproxy.pid" if kind == "haproxy" else "keepalived.pid"
        candidates = [
            d / pid_file
            for agent in self.stack.agents
            for d in agent.instance_dirs()
            if (d / pid_file).exists()
        ]
        if not candidates:
            return
        try:
            pid = int(self.rnd.choice(candidates).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        if not pid_alive(pid):
            return
        for victim in [pid, *children_of(pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        self.kills[kind] += 1

    def all_running(self) -> bool:
        procs = [self.stack.api.proc, self.stack.controller.proc] + [
            a.proc for a in self.stack.agents
        ]
        return all(p is not None and p.poll() is None for p in procs)


def kill(proc: subprocess.Popen[bytes] | None) -> bool:
    if proc is None or proc.poll() is not None:
        return False
    proc.kill()
    proc.wait(5)
    return True


def run_chaos(opts: Options) -> dict[str, Any]:
    """The whole run; raises AssertionError on any failed check. Returns what happened."""
    log(
        f"seed {opts.seed} ({SEED_ENV}={opts.seed} replays it), {opts.duration:.0f}s of chaos, "
        f"{opts.agents} agents, up to {opts.max_lbs} LBs, pairs={opts.pairs}"
    )
    rnd = random.Random(opts.seed)
    with world(opts.agents, opts.pairs) as w:
        log(f"stack up in {w.stack.root}")
        workload = Workload(
            w.stack, random.Random(rnd.random()), w.backends, opts.max_lbs, w.flavor_id, w.subnet_id
        )
        chaos = Chaos(w.stack, random.Random(rnd.random()), opts)
        for _ in range(max(1, opts.max_lbs // 2)):  # something to change and kill from the start
            workload.create_lb()
        workload.start()
        started = time.monotonic()
        next_kill = started + rnd.uniform(*opts.kill_every)
        next_report = started + 60
        try:
            while time.monotonic() - started < opts.duration:
                chaos.supervise()
                if time.monotonic() >= next_kill:
                    w.seen_instances |= {d.name for a in w.stack.agents for d in a.instance_dirs()}
                    chaos.strike()
                    next_kill = time.monotonic() + rnd.uniform(*opts.kill_every)
                if workload.error is not None:
                    break
                if time.monotonic() >= next_report:
                    n = sum(workload.outcomes.values())
                    elapsed = time.monotonic() - started
                    log(f"{elapsed:.0f}s: {n} requests, kills {dict(chaos.kills)}")
                    next_report += 60
                time.sleep(0.05)
        finally:
            workload.finish()
        log(f"chaos over: kills {dict(chaos.kills)}")
        log(f"workload: {dict(sorted(workload.outcomes.items()))}")
        chaos.disarm()
        wait_for(
            lambda: (chaos.supervise(), chaos.all_running() and w.stack.api_up())[1],
            60,
            0.1,
            "every process running again",
        )
        assert workload.server_errors == [], "5xx answers:\n" + "\n".join(workload.server_errors)
        assert workload.refused == [], "valid requests refused:\n" + "\n".join(workload.refused)
        t0 = time.monotonic()
        eventually(lambda: settled(w), opts.converge_timeout, "convergence")
        eventually(lambda: pairs_whole(w), 30, "whole pairs")
        log(f"converged {time.monotonic() - t0:.1f}s after the chaos")
        events = w.stack.admin.get("/v2/manage/events", params={"limit": 1000}).json()["events"]
        log(f"events: {dict(Counter(e['kind'] for e in events))}")
        # At once: a load balancer reads ACTIVE only once what it wants is applied.
        eventually(lambda: check_loaded(w), 0, "loaded state = desired state")
        if not checker_sees_a_difference(w):
            log("no server ready anywhere: the comparison's self-check was skipped")
        eventually(lambda: check_traffic(w), 20, "traffic as desired")
        eventually(lambda: check_member_status(w), 20, "member statuses from HAProxy")
        n_lbs = len(w.stack.tenant.get("/v2/lbaas/loadbalancers").json()["loadbalancers"])
        n_insts = len(instances(w))
        log(f"{n_lbs} LBs, {n_insts} instances: loaded state, traffic and statuses as desired")
        for lb in w.stack.tenant.get("/v2/lbaas/loadbalancers").json()["loadbalancers"]:
            resp = w.stack.tenant.delete(
                f"/v2/lbaas/loadbalancers/{lb['id']}", params={"cascade": "true"}
            )
            assert resp.status_code in (204, 404), resp.text
        eventually(
            lambda: [
                lb["id"]
                for lb in w.stack.tenant.get("/v2/lbaas/loadbalancers").json()["loadbalancers"]
            ],
            60,
            "every LB deleted",
        )
        eventually(lambda: check_nothing_left(w), 30, "nothing left")
        log(f"all deleted, nothing left ({len(w.seen_instances)} instances seen)")
        return {"kills": chaos.kills, "outcomes": workload.outcomes, "lbs": n_lbs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of chaos")
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--max-lbs", type=int, default=6)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else seed_from_env()

    main_pid = os.getpid()

    def interrupted(signum: int, _frame: object) -> None:
        if os.getpid() != main_pid:
            # A fork without exec (pyroute2's netns helper) inherits this handler: it must
            # die as SIGTERM would have it, never run our cleanup (it removed the run's
            # directory under our feet).
            os._exit(128 + signum)
        raise KeyboardInterrupt(signal.Signals(signum).name)  # clean up as after a failure

    # A background job ignores SIGINT: SIGTERM must clean up too.
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    run_chaos(Options(seed=seed, duration=args.duration, agents=args.agents, max_lbs=args.max_lbs))


if __name__ == "__main__":
    main()
