"""The agent's `/metrics`: every instance's HAProxy counters, read when scraped.

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

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from openha.agent.haproxy import cli_command
from openha.agent.promstats import InstanceMetrics, split_answers
from openha.domain.spec import InstanceSpec

COMMAND = "show info;show stat"


class InstancesCollector(Collector):
    def __init__(
        self, sources: Callable[[], list[tuple[InstanceSpec, Path]]], timeout: float = 1.0
    ) -> None:
        self.sources = sources
        self.timeout = timeout

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        metrics = InstanceMetrics()
        failed = 0
        for spec, socket_path in self.sources():
            labels = (spec.project_id, spec.load_balancer_id, spec.instance_id)
            try:
                answer = cli_command(socket_path, COMMAND, self.timeout)
            except OSError:
                answer = ""
            info, stat = split_answers(answer)
            up = "Uptime_sec" in info
            failed += not up
            metrics.add_up(labels, up, spec.role)
            if up:
                metrics.add(labels, info, stat)
        yield from metrics.families()
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
