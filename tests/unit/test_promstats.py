"""HAProxy's stats answers as Prometheus families, and the agent's collector over a socket."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from openha.agent.metrics import InstancesCollector
from openha.agent.promstats import InstanceMetrics, parse_stat, split_answers
from openha.agent.server import create_app
from openha.agent.service import AgentService
from openha.domain.spec import InstanceSpec
from openha.settings import Settings

# A real `show info;show stat` answer of HAProxy 2.6 (one frontend, a backend with a
# member whose check fails and a disabled one), names as the renderer writes them.
ANSWER = (Path(__file__).parent / "data" / "haproxy_show_info_stat.txt").read_text()
LISTENER = "6a4f0d3e-1111-4000-8000-000000000001"
POOL = "6a4f0d3e-2222-4000-8000-000000000002"
MEMBER_DOWN = "6a4f0d3e-3333-4000-8000-000000000003"
MEMBER_MAINT = "6a4f0d3e-4444-4000-8000-000000000004"
LABELS = ("proj-1", "lb-1", "inst-1")


def _samples(families: list) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in families
        for s in family.samples
    }


def _exposition() -> str:
    metrics = InstanceMetrics()
    info, stat = split_answers(ANSWER)
    metrics.add_up(LABELS, True, "MASTER")
    metrics.add(LABELS, info, stat)
    registry = CollectorRegistry(auto_describe=False)

    class _Fixed:
        def collect(self):  # type: ignore[no-untyped-def]
            return metrics.families()

    registry.register(_Fixed())  # type: ignore[arg-type]
    return generate_latest(registry).decode()


def test_rows_are_relabelled_by_object_id() -> None:
    families = list(text_string_to_metric_families(_exposition()))
    samples = _samples(families)
    base = {"project_id": "proj-1", "loadbalancer_id": "lb-1", "instance_id": "inst-1"}
    listener = frozenset({**base, "listener_id": LISTENER}.items())
    assert samples[("haproxy_frontend_sessions_total", listener)] >= 1
    assert samples[("haproxy_frontend_bytes_in_total", listener)] > 0
    assert samples[("haproxy_frontend_limit_sessions", listener)] > 0
    pool = frozenset({**base, "pool_id": POOL}.items())
    assert samples[("haproxy_backend_up", pool)] == 0  # no member up: the backend is DOWN
    down = {**base, "pool_id": POOL, "member_id": MEMBER_DOWN}
    assert samples[("haproxy_server_up", frozenset(down.items()))] == 0
    assert samples[("haproxy_server_status", frozenset({**down, "state": "DOWN"}.items()))] == 1
    maint = {**base, "pool_id": POOL, "member_id": MEMBER_MAINT}
    assert samples[("haproxy_server_status", frozenset({**maint, "state": "MAINT"}.items()))] == 1
    # Only the current state is a series: no DOWN series for the member in maintenance.
    assert ("haproxy_server_status", frozenset({**maint, "state": "DOWN"}.items())) not in samples
    assert samples[("haproxy_process_uptime_seconds", frozenset(base.items()))] >= 0
    assert samples[("openha_instance_info", frozenset({**base, "role": "MASTER"}.items()))] == 1
    # Every family is declared once, with a HELP and a TYPE.
    names = [f.name for f in families]
    assert len(names) == len(set(names))


def test_http_responses_by_class_and_milliseconds_as_seconds() -> None:
    text = _exposition()
    samples = _samples(list(text_string_to_metric_families(text)))
    base = {"project_id": "proj-1", "loadbalancer_id": "lb-1", "instance_id": "inst-1"}
    codes = {
        code: samples[
            (
                "haproxy_frontend_http_responses_total",
                frozenset({**base, "listener_id": LISTENER, "code": code}.items()),
            )
        ]
        for code in ("1xx", "2xx", "3xx", "4xx", "5xx", "other")
    }
    assert codes["5xx"] == 1  # the one request got a 503: no member was up
    assert sum(codes.values()) == 1
    row = next(r for r in parse_stat(split_answers(ANSWER)[1]) if r["svname"] == "BACKEND")
    key = (
        "haproxy_backend_total_time_average_seconds",
        frozenset({**base, "pool_id": POOL}.items()),
    )
    assert samples[key] == float(row["ttime"]) / 1000


def test_free_text_columns_do_not_shift_the_numbers() -> None:
    header = "# pxname,svname,scur,check_desc,bin\n"
    row = 'p,s,3,"Layer7 wrong status, code: 500",42\n'
    (parsed,) = parse_stat(header + row)
    assert parsed["bin"] == "42"
    assert parsed["check_desc"] == "Layer7 wrong status, code: 500"


def _spec(instance_id: str) -> InstanceSpec:
    return InstanceSpec(
        instance_id=instance_id,
        load_balancer_id="lb-1",
        project_id="proj-1",
        generation=1,
        namespace="ohi-x",
        interfaces=(),
        vip_address="192.0.2.1",
        haproxy_config="",
    )


def test_collector_asks_each_socket_once_and_marks_the_silent_down(tmp_path: Path) -> None:
    path = tmp_path / "stats.sock"
    asked: list[bytes] = []
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            asked.append(conn.recv(1024))
            conn.sendall(ANSWER.encode())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        sources = [(_spec("inst-1"), path), (_spec("inst-2"), tmp_path / "missing.sock")]
        registry = CollectorRegistry(auto_describe=False)
        registry.register(InstancesCollector(lambda: sources, timeout=1.0))
        text = generate_latest(registry).decode()
    finally:
        thread.join(timeout=2)
        server.close()
    assert asked == [b"show info;show stat\n"]
    samples = _samples(list(text_string_to_metric_families(text)))
    base = {"project_id": "proj-1", "loadbalancer_id": "lb-1"}
    assert samples[("haproxy_up", frozenset({**base, "instance_id": "inst-1"}.items()))] == 1
    assert samples[("haproxy_up", frozenset({**base, "instance_id": "inst-2"}.items()))] == 0
    assert samples[("openha_agent_scrape_failed_instances", frozenset())] == 1


def test_agent_metrics_route_takes_the_scrape_credential_or_the_secret(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, agent_dir=tmp_path / "agent", metrics_token="scrape")
    service = AgentService(settings)
    client = TestClient(create_app(service))
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    for credential in ("scrape", service.secret):
        resp = client.get("/metrics", headers={"Authorization": f"Bearer {credential}"})
        assert resp.status_code == 200, resp.text
        assert "openha_agent_scrape_failed_instances 0.0" in resp.text
    # The scrape credential opens /metrics only.
    assert (
        client.get("/v1/instances", headers={"Authorization": "Bearer scrape"}).status_code == 401
    )
