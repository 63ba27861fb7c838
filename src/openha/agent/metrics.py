"""The agent's `/metrics`: every instance's HAProxy counters and cgroup usage, read
when scraped.

Nothing is polled: a scrape asks each instance's stats socket `show info;show stat`
(one round trip) and translates the answers (`openha.agent.promstats`). An idle
host between scrapes costs nothing, and a scrape costs one socket call per instance.
An instance whose HAProxy does not answer within `timeout` reads `haproxy_up 0`
and holds up nobody else for longer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from openha.agent.haproxy import cli_command
from openha.agent.promstats import InstanceMetrics, split_answers
from openha.agent.sandbox import InstanceSandbox
from openha.agent.toptalkers import parse_trips
from openha.domain.spec import InstanceSpec
from openha.render.protection import LIMITS_MAP, TRIPS_TABLE

COMMAND = "show info;show stat"
# Protected instances also answer their limit trips in the same round trip.
PROTECTED_COMMAND = f"{COMMAND};show table {TRIPS_TABLE}"
TRIP_KINDS = ("conn", "req", "hdr")


class InstancesCollector(Collector):
    def __init__(
        self, sources: Callable[[], list[tuple[InstanceSpec, Path]]], timeout: float = 1.0
    ) -> None:
        self.sources = sources
        self.timeout = timeout

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        metrics = InstanceMetrics()
        trips = CounterMetricFamily(
            "openha_protection_limit_trips",
            "Times a source went over a protection limit on this instance "
            "(kind: conn = connection limits, req = request limits, hdr = header limits)",
            labels=["project_id", "loadbalancer_id", "instance_id", "kind"],
        )
        failed = 0
        for spec, socket_path in self.sources():
            labels = (spec.project_id, spec.load_balancer_id, spec.instance_id)
            protected = LIMITS_MAP in spec.files
            try:
                answer = cli_command(
                    socket_path, PROTECTED_COMMAND if protected else COMMAND, self.timeout
                )
            except OSError:
                answer = ""
            info, stat = split_answers(answer)
            if protected:
                # HAProxy ends each answer with a blank line: the table's comes last.
                stat, _, table = stat.lstrip("\n").partition("\n\n")
                if "Uptime_sec" in info:
                    counted = parse_trips(table)
                    for kind in TRIP_KINDS:
                        trips.add_metric([*labels, kind], counted.get(kind, 0))
            up = "Uptime_sec" in info
            failed += not up
            metrics.add_up(labels, up, spec.role)
            if up:
                metrics.add(labels, info, stat)
        yield from metrics.families()
        yield trips
        yield GaugeMetricFamily(
            "openha_agent_scrape_failed_instances",
            "Instances whose HAProxy did not answer this scrape",
            value=failed,
        )
        yield GaugeMetricFamily(
            "openha_agent_scrape_duration_seconds",
            "Time this scrape took to read every instance",
            value=time.perf_counter() - started,
        )


class SandboxCollector(Collector):
    """Each instance's cgroup usage against its limits, read from the cgroupfs when scraped."""

    def __init__(self, sources: Callable[[], list[tuple[InstanceSpec, InstanceSandbox]]]) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        names = ["project_id", "loadbalancer_id", "instance_id"]  # as the others here
        cpu = CounterMetricFamily(
            "openha_instance_cpu_seconds", "CPU time used by the instance's processes", labels=names
        )
        gauges = {
            "memory_bytes": ("openha_instance_memory_bytes", "Memory the instance's cgroup uses"),
            "memory_max_bytes": ("openha_instance_memory_limit_bytes", "Its memory limit"),
            "pids": ("openha_instance_tasks", "Tasks (threads) in the instance's cgroup"),
            "pids_max": ("openha_instance_tasks_limit", "Its task limit"),
            "oom_kills": ("openha_instance_oom_kills", "Processes its memory limit killed"),
        }
        families = {
            key: GaugeMetricFamily(name, doc, labels=names) for key, (name, doc) in gauges.items()
        }
        degraded = GaugeMetricFamily(
            "openha_instance_sandbox_degraded",
            "1 when a limit or wall of the instance could not be applied",
            labels=names,
        )
        for spec, sandbox in self.sources():
            labels = [spec.project_id, spec.load_balancer_id, spec.instance_id]
            usage = sandbox.usage().as_dict()
            if usage["cpu_seconds"] is not None:
                cpu.add_metric(labels, float(usage["cpu_seconds"]))
            for key, family in families.items():
                if usage[key] is not None:
                    family.add_metric(labels, float(usage[key]))  # type: ignore[arg-type]
            degraded.add_metric(labels, 1.0 if sandbox.problems else 0.0)
        yield cpu
        yield from families.values()
        yield degraded
