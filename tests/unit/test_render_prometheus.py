"""Octavia's PROMETHEUS listener: rendered, checked by `haproxy -c`, and served for real."""

# The renderer tests' fixtures (paths, workdir, echo_servers) are imported by name.
# ruff: noqa: F401, F811

from __future__ import annotations

from pathlib import Path

import pytest

from openha.render.haproxy import HAProxyPaths, RenderError, render_haproxy
from tests.unit.test_render_haproxy import (
    _free_port,
    _get,
    _serving,
    echo_servers,
    listener,
    loadbalancer,
    member,
    paths,
    policy,
    pool,
    render_valid,
    section,
    workdir,
)


def test_prometheus_listener_renders_the_exporter(paths: HAProxyPaths, workdir: Path) -> None:
    prom = listener("PROMETHEUS", protocol_port=9100, allowed_cidrs=("10.0.0.0/8",))
    cfg = render_valid(loadbalancer((prom,)), paths, workdir)
    fe = section(cfg, "frontend", prom.id)
    assert fe[:2] == ["bind 10.0.0.5:9100", "mode http"]
    assert "tcp-request connection reject unless { src 10.0.0.0/8 }" in fe
    assert fe[-3:] == [
        "http-request set-query 'scope=frontend&scope=backend&scope=server' if { path '/metrics' }",
        "http-request use-service prometheus-exporter if { path '/metrics' }",
        "http-request deny deny_status 404",
    ]
    assert "default_backend" not in cfg


def test_prometheus_listener_takes_no_pool_or_policy(paths: HAProxyPaths) -> None:
    p = pool()
    with pytest.raises(RenderError, match="PROMETHEUS"):
        render_haproxy(loadbalancer((listener("PROMETHEUS", default_pool_id=p.id),), (p,)), paths)
    with pytest.raises(RenderError, match="PROMETHEUS"):
        render_haproxy(loadbalancer((listener("PROMETHEUS", l7policies=(policy(),)),)), paths)


def test_prometheus_listener_serves_its_load_balancer_only(
    echo_servers: list[int],
    paths: HAProxyPaths,
    workdir: Path,
) -> None:
    web_port, prom_port = _free_port(), _free_port()
    backend = pool(members=(member(address="127.0.0.1", protocol_port=echo_servers[0]),))
    web = listener(protocol_port=web_port, default_pool_id=backend.id)
    prom = listener("PROMETHEUS", protocol_port=prom_port)
    spec = loadbalancer((web, prom), (backend,), vip="127.0.0.1")
    cfg = render_valid(spec, paths, workdir)
    with _serving(cfg, prom_port, workdir):
        for _ in range(3):
            assert _get(web_port, "/")[0] == 200
        # Whatever scope the scraper asks for, it reads the LB's objects, not the process.
        status, body, _ = _get(prom_port, "/metrics?scope=global&scope=frontend")
        assert status == 200
        assert f'haproxy_frontend_http_requests_total{{proxy="{web.id}"}} 3' in body
        assert f'haproxy_server_status{{proxy="{backend.id}",server="{backend.members[0].id}"' in (
            body
        )
        assert "haproxy_process_" not in body
        assert _get(prom_port, "/")[0] == 404
