"""Debian's real Prometheus scrapes a live stack with the shipped config and rules.

The scrape config, rules and dashboard of deploy/prometheus are used as shipped,
with the addresses of this stack, second-long intervals and every `for:` cut to 0s
(the expressions are what is tested, not the operator's patience). Prometheus finds
the agent through the API's HTTP service discovery, reads both with the scrape
credential, and a member taken down raises OpenHAMemberDown naming it. A
PROMETHEUS listener serves its load balancer's metrics to a client on the wire.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from lbhelpers import http_lb
from stack import Stack, free_port, wait_for

from openha.lab import BackendServer, ClientNamespace, Lab

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
PROMETHEUS = shutil.which("prometheus")
SCRAPE_TOKEN = "scrape-credential-of-the-prometheus-test"


class Prometheus:
    """`prometheus` on 127.0.0.1 with its own directory, stopped and removed on close."""

    def __init__(self, stack: Stack) -> None:
        assert PROMETHEUS is not None
        self.dir = Path(tempfile.mkdtemp(prefix="ohprom-", dir="/tmp"))
        # Traversable (not listable) for keepalived's unprivileged script user.
        self.dir.chmod(0o711)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        token = self.dir / "token"
        token.write_text(SCRAPE_TOKEN)
        token.chmod(0o600)
        rules = (DEPLOY / "openha.rules.yml").read_text()
        (self.dir / "openha.rules.yml").write_text(
            re.sub(r"^(\s+)for: .*$", r"\1for: 0s", rules, flags=re.M)
        )
        config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = [str(self.dir / "openha.rules.yml")]
        api, agents = config["scrape_configs"]
        api_address = stack.url.removeprefix("http://")
        api["static_configs"] = [{"targets": [api_address]}]
        api["authorization"]["credentials_file"] = str(token)
        agents["authorization"]["credentials_file"] = str(token)
        (sd,) = agents["http_sd_configs"]
        sd["url"] = f"{stack.url}/v2/manage/prometheus/targets"
        sd["refresh_interval"] = "1s"
        sd["authorization"]["credentials_file"] = str(token)
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = open(self.dir / "prometheus.log", "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.http = httpx.Client(base_url=self.url, timeout=10)
        wait_for(self._ready, 30, what="prometheus ready")

    def _ready(self) -> bool:
        assert self.proc.poll() is None, (self.dir / "prometheus.log").read_text()
        try:
            return self.http.get("/-/ready").status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        resp = self.http.get("/api/v1/query", params={"query": expr})
        body = resp.json()
        assert body["status"] == "success", (expr, body)
        return list(body["data"]["result"])

    def alerts(self, name: str) -> list[dict[str, Any]]:
        found = self.http.get("/api/v1/alerts").json()["data"]["alerts"]
        return [a for a in found if a["labels"]["alertname"] == name and a["state"] == "firing"]

    def close(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def stack(lab: Lab) -> Iterator[Stack]:
    stack = Stack(lab)
    try:
        stack.settings.metrics_token = SCRAPE_TOKEN  # the API reads its settings per request
        stack.add_agent(env={"OPENHA_METRICS_TOKEN": SCRAPE_TOKEN})
        yield stack
    finally:
        stack.close()


@pytest.fixture
def prometheus(stack: Stack) -> Iterator[Prometheus]:
    if PROMETHEUS is None:
        pytest.skip("prometheus is not installed (Debian's prometheus package)")
    server = Prometheus(stack)
    try:
        yield server
    finally:
        server.close()


def test_prometheus_scrapes_the_stack_and_alerts_on_a_member_down(
    stack: Stack, lab: Lab, backends: list[BackendServer], prometheus: Prometheus
) -> None:
    made = http_lb(stack, backends)
    lb, listener, pool = made["lb"], made["listener"], made["pool"]
    members = {m["name"]: m["id"] for m in made["members"]}
    exporter = stack.create(
        "listeners",
        "listener",
        {"loadbalancer_id": lb["id"], "protocol": "PROMETHEUS", "protocol_port": 9100},
    )
    stack.wait_active(lb["id"])
    stack.wait_operating(lb["id"], "ONLINE")
    client = ClientNamespace(lab)
    try:
        vip = lb["vip_address"]
        for _ in range(5):
            assert client.request(f"http://{vip}/", timeout=5).status == 200
        # The PROMETHEUS listener: the LB's own counters, from inside its namespace.
        scraped = client.request(f"http://{vip}:9100/metrics", timeout=5)
        assert scraped.status == 200, scraped.text
        line = f'haproxy_frontend_http_requests_total{{proxy="{listener["id"]}"}}'
        counted = [ln for ln in scraped.text.splitlines() if ln.startswith(line)]
        assert counted and float(counted[0].split()[-1]) >= 5, scraped.text[:2000]
        assert f'haproxy_frontend_http_requests_total{{proxy="{exporter["id"]}"}}' in scraped.text
        assert "haproxy_process_" not in scraped.text  # not the host's process figures
        assert client.request(f"http://{vip}:9100/other", timeout=5).status == 404

        # Prometheus found the agent through the API and reads both.
        def up(job: str) -> list[dict[str, Any]]:
            return prometheus.query(f'up{{job="{job}"}} == 1')

        sd = httpx.get(
            f"{stack.url}/v2/manage/prometheus/targets",
            headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"},
        )
        assert sd.status_code == 200, sd.text
        assert [group["labels"]["host"] for group in sd.json()] == [stack.agents[0].name]
        try:
            agent_up = wait_for(lambda: up("openha-agent"), 30, what="agent scraped")
        except AssertionError:
            targets = prometheus.http.get("/api/v1/targets").json()["data"]["activeTargets"]
            log = (prometheus.dir / "prometheus.log").read_text()[-3000:]
            raise AssertionError(f"agent not scraped: {targets}\n{log}") from None
        assert agent_up[0]["metric"]["host"] == stack.agents[0].name
        wait_for(lambda: up("openha-api"), 30, what="API scraped")
        down_member = members[backends[1].name]
        series = wait_for(
            lambda: prometheus.query(f'haproxy_server_up{{member_id="{down_member}"}}'),
            30,
            what="member series",
        )
        labels = series[0]["metric"]
        assert labels["project_id"] == lb["project_id"]
        assert labels["loadbalancer_id"] == lb["id"]
        assert labels["pool_id"] == pool["id"]
        assert labels["job"] == "openha-agent" and labels["instance_id"]
        requests = wait_for(
            lambda: prometheus.query(
                f'haproxy_frontend_http_requests_total{{listener_id="{listener["id"]}"}} >= 5'
            ),
            30,
            what="listener requests",
        )
        assert requests[0]["metric"]["loadbalancer_id"] == lb["id"]
        wait_for(
            lambda: prometheus.query('openha_reconciles_total{outcome="applied"} > 0'),
            30,
            what="controller counters through the API",
        )
        assert not prometheus.alerts("OpenHAMemberDown")

        backends[1].stop()
        firing = wait_for(
            lambda: prometheus.alerts("OpenHAMemberDown"), 30, what="OpenHAMemberDown firing"
        )
        assert [a["labels"]["member_id"] for a in firing] == [down_member]
        assert firing[0]["labels"]["loadbalancer_id"] == lb["id"]
        degraded = wait_for(
            lambda: prometheus.alerts("OpenHALoadBalancerDegraded"),
            30,
            what="OpenHALoadBalancerDegraded firing",
        )
        assert degraded[0]["labels"]["loadbalancer_id"] == lb["id"]

        # Every panel of the shipped dashboard is a query Prometheus accepts.
        dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"].replace("$project", ".*").replace("$loadbalancer", ".*")
                prometheus.query(expr)
        assert prometheus.query("sum(rate(haproxy_frontend_http_requests_total[1m])) >= 0")
    finally:
        client.close()
