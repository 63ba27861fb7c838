"""The HAProxy renderer: rendered text, `haproxy -c` on every shape, and hostile values.

Each rendered configuration is checked twice: assertions on the lines that carry
the semantics, then the real HAProxy 2.6 parser (`haproxy -c`, no root needed),
which must accept it without a single warning. A few tests also start HAProxy
for real and send requests through it, to prove that what parses also means
what Octavia means (L7 precedence, strong quoting, inserted headers, L7 keys).
"""

from __future__ import annotations

import contextlib
import http.server
import itertools
import json
import os
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openha.domain import constants as c
from openha.domain.spec import (
    HealthMonitorSpec,
    L7PolicySpec,
    L7RuleSpec,
    ListenerSpec,
    LoadBalancerSpec,
    MemberSpec,
    PoolSpec,
    SessionPersistenceSpec,
    SubnetSpec,
)
from openha.render.haproxy import (
    DEFAULT_LISTENER_MAXCONN,
    MAXCONN_CAP,
    SANDBOX_GID_ENV,
    SANDBOX_UID_ENV,
    HAProxyPaths,
    PeerSpec,
    PeersSpec,
    RenderError,
    UnsupportedFeature,
    access_log_format,
    expected_status,
    ident,
    instance_maxconn,
    maxconn_for_fd_limit,
    quote,
    render_haproxy,
)

HAPROXY = "/usr/sbin/haproxy"
# The agent gives the instance's uid and gid through the environment (agent.sandbox).
SANDBOX_ENV = {**os.environ, SANDBOX_UID_ENV: "1000000007", SANDBOX_GID_ENV: "1000000007"}
VIP4 = "10.0.0.5"
VIP6 = "2001:db8::5"

# --- builders ------------------------------------------------------------------------------


def uid() -> str:
    return str(uuid.uuid4())


def member(**kw: Any) -> MemberSpec:
    return MemberSpec(**{"id": uid(), "address": "10.0.1.10", "protocol_port": 8080, **kw})


def pool(protocol: str = "HTTP", **kw: Any) -> PoolSpec:
    fields = {"id": uid(), "protocol": protocol, "lb_algorithm": "ROUND_ROBIN", **kw}
    fields.setdefault("members", (member(),))
    return PoolSpec(**fields)


def listener(protocol: str = "HTTP", **kw: Any) -> ListenerSpec:
    return ListenerSpec(**{"id": uid(), "protocol": protocol, "protocol_port": 80, **kw})


def monitor(type: str = "HTTP", **kw: Any) -> HealthMonitorSpec:
    fields = {"id": uid(), "type": type, "delay": 5, "timeout": 3, "max_retries": 2, **kw}
    return HealthMonitorSpec(**fields)


def rule(type: str = "PATH", compare_type: str = "STARTS_WITH", **kw: Any) -> L7RuleSpec:
    fields = {"id": uid(), "type": type, "compare_type": compare_type, "value": "/api", **kw}
    return L7RuleSpec(**fields)


def policy(action: str = "REJECT", position: int = 1, **kw: Any) -> L7PolicySpec:
    kw.setdefault("rules", (rule(),))
    return L7PolicySpec(id=uid(), action=action, position=position, **kw)


def loadbalancer(
    listeners: tuple[ListenerSpec, ...] = (),
    pools: tuple[PoolSpec, ...] = (),
    vip: str = VIP4,
    **kw: Any,
) -> LoadBalancerSpec:
    subnet = SubnetSpec(
        id=uid(), cidr="2001:db8::/64" if ":" in vip else "10.0.0.0/24", network_id=uid()
    )
    fields = {"id": uid(), "project_id": "p1", "generation": 1, **kw}
    return LoadBalancerSpec(
        vip_address=vip, vip_subnet=subnet, listeners=listeners, pools=pools, **fields
    )


def http_lb(pool_kw: dict[str, Any] | None = None, **listener_kw: Any) -> LoadBalancerSpec:
    """One HTTP listener whose default pool is built from `pool_kw`."""
    p = pool(**(pool_kw or {}))
    return loadbalancer((listener(default_pool_id=p.id, **listener_kw),), (p,))


def section(cfg: str, keyword: str, name: str) -> list[str]:
    """The stripped lines of one `frontend|backend|peers <name>` section, comments left out."""
    lines = cfg.splitlines()
    start = lines.index(f"{keyword} {name}")
    body: list[str] = []
    for line in lines[start + 1 :]:
        if not line.startswith(" "):
            break
        if not line.strip().startswith("#"):
            body.append(line.strip())
    return body


# --- haproxy -c ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Short: unix socket paths are limited to 107 bytes.
    path = tmp_path_factory.mktemp("ohr")
    # A server-state file as `show servers state` writes it (version line only):
    # HAProxy warns about a missing or empty one.
    (path / "server-state").write_text("1\n")
    return path


@pytest.fixture()
def paths(workdir: Path) -> HAProxyPaths:
    (workdir / "root").mkdir(exist_ok=True)
    return HAProxyPaths(
        stats_socket=str(workdir / "stats.sock"),
        chroot=str(workdir / "root"),
        log_socket=str(workdir / "log.sock"),
        syslog_socket=str(workdir / "syslog.sock"),
        state_dir=str(workdir),
    )


def haproxy_check(cfg: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    if not Path(HAPROXY).exists():
        pytest.skip("haproxy is not installed")
    path = workdir / f"{uid()}.cfg"
    path.write_text(cfg)
    return subprocess.run(
        [HAPROXY, "-c", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env=SANDBOX_ENV,
    )


def assert_valid(cfg: str, workdir: Path) -> None:
    """HAProxy accepts the configuration, without warnings."""
    result = haproxy_check(cfg, workdir)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"haproxy -c failed:\n{output}\n---\n{cfg}"
    noise = [line for line in output.splitlines() if "[WARNING]" in line or "[ALERT]" in line]
    assert not noise, f"haproxy -c warned:\n{output}\n---\n{cfg}"


def render_valid(spec: LoadBalancerSpec, paths: HAProxyPaths, workdir: Path, **kw: Any) -> str:
    cfg = render_haproxy(spec, paths, **kw)
    assert_valid(cfg, workdir)
    return cfg


# --- the basics ----------------------------------------------------------------------------


def test_minimal_http_load_balancer(paths: HAProxyPaths, workdir: Path) -> None:
    spec = http_lb()
    lst, p = spec.listeners[0], spec.pools[0]
    cfg = render_valid(spec, paths, workdir)

    assert f"load balancer {spec.id}, generation 1" in cfg
    assert (
        f"    stats socket '{paths.stats_socket}' mode 600 level admin expose-fd listeners" in cfg
    )
    assert "    log ring@openha_log len 8192 local0\n" in cfg
    assert f"    log '{paths.log_socket}' len 8192 local0 notice\n" in cfg  # admin only
    assert f"    log-tag lb-{spec.id}\n" in cfg
    assert f"    server syslog 'unix@{paths.syslog_socket}' log-proto octet-count" in cfg
    assert f"    maxconn {DEFAULT_LISTENER_MAXCONN}\n    " in cfg
    assert "    nbthread 1\n" in cfg  # fixed, whatever the host's core count
    assert f"    server-state-file '{workdir}/server-state'" in cfg
    assert "    hard-stop-after " in cfg
    assert "    close-spread-time 1s\n" in cfg  # reloads close idle keep-alives gently
    assert re.search(r"^\s+daemon\b", cfg, re.M) is None  # the agent passes -D
    defaults = cfg.split("\ndefaults\n")[1].split("\n\n")[0]
    for line in ("log global", "option redispatch", "retries 3", "option dontlognull"):
        assert f"    {line}\n" in defaults

    fe = section(cfg, "frontend", lst.id)
    assert fe[:2] == [f"bind {VIP4}:80", "mode http"]
    assert fe[2] == f"log-format '{access_log_format('http', spec.id, spec.id, spec.project_id)}'"
    assert fe[3] == "unique-id-format '%{+X}o%ci:%cp_%fi:%fp_%Ts_%rt:%pid'"
    assert fe[4:6] == [f"maxconn {DEFAULT_LISTENER_MAXCONN}", "timeout client 50000"]
    assert fe[-1] == f"default_backend {p.id}"
    be = section(cfg, "backend", p.id)
    assert be[:2] == ["mode http", "balance roundrobin"]
    assert "timeout connect 5000" in be and "timeout server 50000" in be
    assert be[-1] == f"server {p.members[0].id} 10.0.1.10:8080 weight 1"


def test_load_balancer_without_listeners(paths: HAProxyPaths, workdir: Path) -> None:
    cfg = render_valid(loadbalancer(pools=(pool(),)), paths, workdir)
    assert "frontend" not in cfg and "backend" not in cfg  # an unused pool is not rendered


def test_rendering_is_deterministic(paths: HAProxyPaths) -> None:
    spec = http_lb({"members": (member(), member(address="10.0.1.11"))})
    assert render_haproxy(spec, paths) == render_haproxy(spec, paths)


# --- protocols -----------------------------------------------------------------------------

SUPPORTED_PAIRS = [
    (lp, pp)
    for lp, pps in c.LISTENER_POOL_PROTOCOL_MAP.items()
    if lp in ("HTTP", "HTTPS", "TCP")
    for pp in pps
]


@pytest.mark.parametrize(("listener_protocol", "pool_protocol"), SUPPORTED_PAIRS)
def test_protocol_pairs(
    listener_protocol: str, pool_protocol: str, paths: HAProxyPaths, workdir: Path
) -> None:
    p = pool(pool_protocol)
    lst = listener(listener_protocol, protocol_port=443, default_pool_id=p.id)
    cfg = render_valid(loadbalancer((lst,), (p,)), paths, workdir)

    listener_mode = "http" if listener_protocol == "HTTP" else "tcp"
    fe = section(cfg, "frontend", lst.id)
    assert f"mode {listener_mode}" in fe
    assert any(line.startswith("log-format '{") for line in fe)
    assert ('"status":%ST' in cfg) == (listener_mode == "http")
    # A pool speaks HTTP when its protocol is HTTP or an HTTP listener uses it
    # (a TCP frontend may hand connections to an HTTP backend; not the reverse).
    backend_mode = "http" if "HTTP" in (listener_protocol, pool_protocol) else "tcp"
    be = section(cfg, "backend", p.id)
    assert f"mode {backend_mode}" in be
    server = be[-1]
    proxy = {"PROXY": " send-proxy", "PROXYV2": " send-proxy-v2"}.get(pool_protocol, "")
    assert server.endswith(f"weight 1{proxy}")


@pytest.mark.parametrize("protocol", ["UDP", "SCTP"])
@pytest.mark.parametrize("enabled", [True, False])
def test_unsupported_listener_protocols(protocol: str, enabled: bool, paths: HAProxyPaths) -> None:
    spec = loadbalancer((listener(protocol, admin_state_up=enabled),))
    with pytest.raises(UnsupportedFeature, match=protocol):
        render_haproxy(spec, paths)


@pytest.mark.parametrize("protocol", ["UDP", "SCTP"])
def test_unsupported_pool_protocols(protocol: str, paths: HAProxyPaths) -> None:
    with pytest.raises(UnsupportedFeature, match=protocol):
        render_haproxy(loadbalancer(pools=(pool(protocol),)), paths)


def test_unknown_protocol_is_refused(paths: HAProxyPaths) -> None:
    with pytest.raises(RenderError, match="unknown protocol"):
        render_haproxy(loadbalancer((listener("GOPHER"),)), paths)


# --- algorithms and persistence ------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "balance"),
    [("ROUND_ROBIN", "roundrobin"), ("LEAST_CONNECTIONS", "leastconn"), ("SOURCE_IP", "source")],
)
def test_algorithms(algorithm: str, balance: str, paths: HAProxyPaths, workdir: Path) -> None:
    spec = http_lb({"lb_algorithm": algorithm})
    cfg = render_valid(spec, paths, workdir)
    assert f"balance {balance}" in section(cfg, "backend", spec.pools[0].id)


def test_source_ip_port_is_unsupported(paths: HAProxyPaths) -> None:
    with pytest.raises(UnsupportedFeature, match="SOURCE_IP_PORT"):
        render_haproxy(http_lb({"lb_algorithm": "SOURCE_IP_PORT"}), paths)


PEERS = PeersSpec(
    local_peer="inst-a",
    peers=(
        PeerSpec(name="inst-a", address="10.0.0.2", port=1024),
        PeerSpec(name="inst-b", address="2001:db8::3", port=1024),
    ),
)


@pytest.mark.parametrize("persistence", c.SESSION_PERSISTENCE_TYPES)
@pytest.mark.parametrize("protocol", ["HTTP", "TCP"])
@pytest.mark.parametrize("vip", [VIP4, VIP6])
@pytest.mark.parametrize("peers", [None, PEERS], ids=["single", "peers"])
def test_session_persistence(
    persistence: str,
    protocol: str,
    vip: str,
    peers: PeersSpec | None,
    paths: HAProxyPaths,
    workdir: Path,
) -> None:
    sp = SessionPersistenceSpec(type=persistence, cookie_name="JSESSIONID")
    p = pool(protocol, session_persistence=sp)
    lst = listener(protocol, default_pool_id=p.id)
    cfg = render_valid(loadbalancer((lst,), (p,), vip=vip), paths, workdir, peers=peers)

    be = section(cfg, "backend", p.id)
    sync = " peers openha_peers" if peers else ""
    server = be[-1]
    if persistence == "SOURCE_IP":
        table = "ipv6" if vip == VIP6 else "ip"
        assert f"stick-table type {table} size 10k{sync}" in be
        assert "stick on src" in be
    elif protocol == "TCP":
        # Cookies need HTTP mode; HAProxy would ignore them with a warning.
        assert not [line for line in be if "cookie" in line or "stick" in line]
    elif persistence == "HTTP_COOKIE":
        assert "cookie SRV insert indirect nocache" in be
        assert server.endswith(f" cookie {p.members[0].id}")
    else:
        assert f"stick-table type string len 64 size 10k{sync}" in be
        assert "stick store-response res.cook('JSESSIONID')" in be
        assert "stick match req.cook('JSESSIONID')" in be
    assert ("peers openha_peers" in cfg) == bool(peers)


def test_app_cookie_needs_a_cookie_name(paths: HAProxyPaths) -> None:
    sp = SessionPersistenceSpec(type="APP_COOKIE")
    with pytest.raises(RenderError, match="cookie_name"):
        render_haproxy(http_lb({"session_persistence": sp}), paths)


# --- health monitors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hm", "lines", "server_check"),
    [
        (
            {"type": "HTTP"},
            [
                "option httpchk",
                "http-check send meth GET uri '/'",
                "http-check expect status '200'",
            ],
            "check inter 5s fall 3 rise 2",
        ),
        (
            {
                "type": "HTTP",
                "http_method": "HEAD",
                "url_path": "/healthz?full=1",
                "http_version": 1.1,
                "domain_name": "app.example.com",
                "expected_codes": "200, 202,204",
                "max_retries_down": 5,
            },
            [
                "option httpchk",
                "http-check send meth HEAD uri '/healthz?full=1' ver HTTP/1.1 "
                "hdr Host 'app.example.com'",
                "http-check expect rstatus '^(?:200|202|204)$'",
            ],
            "check inter 5s fall 5 rise 2",
        ),
        (
            {"type": "HTTP", "http_version": 1.0, "expected_codes": "200-299"},
            [
                "http-check send meth GET uri '/' ver HTTP/1.0",
                "http-check expect rstatus '^(?:2[0-9][0-9])$'",
            ],
            "check inter 5s fall 3 rise 2",
        ),
        (
            {"type": "HTTPS", "url_path": "/ping"},
            ["option httpchk", "http-check send meth GET uri '/ping'"],
            "check inter 5s fall 3 rise 2 check-ssl verify none",
        ),
        ({"type": "TCP"}, [], "check inter 5s fall 3 rise 2"),
        ({"type": "TLS-HELLO"}, ["option ssl-hello-chk"], "check inter 5s fall 3 rise 2"),
        ({"type": "PING"}, [], "check inter 5s fall 3 rise 2"),
    ],
)
@pytest.mark.parametrize("protocol", ["HTTP", "TCP"])
def test_health_monitors(
    hm: dict[str, Any],
    lines: list[str],
    server_check: str,
    protocol: str,
    paths: HAProxyPaths,
    workdir: Path,
) -> None:
    m = member()
    p = pool(protocol, health_monitor=monitor(**hm), members=(m,))
    spec = loadbalancer((listener(protocol, default_pool_id=p.id),), (p,))
    cfg = render_valid(spec, paths, workdir)

    be = section(cfg, "backend", p.id)
    assert "timeout check 3s" in be
    for line in lines:
        assert line in be
    if hm["type"] not in ("HTTP", "HTTPS"):
        assert not [line for line in be if "httpchk" in line or "http-check" in line]
    assert be[-1] == f"server {m.id} 10.0.1.10:8080 weight 1 {server_check}"


def test_monitor_address_and_port(paths: HAProxyPaths, workdir: Path) -> None:
    m4 = member(monitor_address="10.0.2.10", monitor_port=9000)
    m6 = member(address="2001:db8::10", monitor_address="2001:db8::11", monitor_port=9001)
    only_port = member(address="10.0.1.12", monitor_port=9002)
    spec = http_lb({"health_monitor": monitor("TCP"), "members": (m4, m6, only_port)})
    cfg = render_valid(spec, paths, workdir)
    be = section(cfg, "backend", spec.pools[0].id)
    check = "check inter 5s fall 3 rise 2"
    assert f"server {m4.id} 10.0.1.10:8080 weight 1 {check} addr 10.0.2.10 port 9000" in be
    assert (
        f"server {m6.id} [2001:db8::10]:8080 weight 1 {check} addr [2001:db8::11] port 9001" in be
    )
    assert f"server {only_port.id} 10.0.1.12:8080 weight 1 {check} port 9002" in be


def test_disabled_health_monitor_means_no_checks(paths: HAProxyPaths, workdir: Path) -> None:
    m = member(monitor_address="10.0.2.10", monitor_port=9000)
    hm = monitor("HTTP", admin_state_up=False)
    spec = http_lb({"health_monitor": hm, "members": (m,)})
    cfg = render_valid(spec, paths, workdir)
    be = section(cfg, "backend", spec.pools[0].id)
    assert be[-1] == f"server {m.id} 10.0.1.10:8080 weight 1"
    assert not [line for line in be if "check" in line]


@pytest.mark.parametrize("hm_type", ["UDP-CONNECT", "SCTP"])
def test_udp_and_sctp_monitors_are_unsupported(hm_type: str, paths: HAProxyPaths) -> None:
    with pytest.raises(UnsupportedFeature, match=hm_type):
        render_haproxy(http_lb({"health_monitor": monitor(hm_type)}), paths)


@pytest.mark.parametrize(
    ("hm", "error"),
    [
        ({"http_method": "BREW"}, "http_method"),
        ({"http_version": 2.0}, "http_version"),
        ({"expected_codes": "2xx"}, "expected_codes"),
        ({"expected_codes": "299-200"}, "reversed"),
        ({"delay": -1}, "delay"),
        ({"timeout": -1}, "timeout"),
        ({"max_retries": 0}, "max_retries"),
    ],
)
def test_invalid_monitor_values(hm: dict[str, Any], error: str, paths: HAProxyPaths) -> None:
    with pytest.raises(RenderError, match=error):
        render_haproxy(http_lb({"health_monitor": monitor("HTTP", **hm)}), paths)


@pytest.mark.parametrize(
    ("delay", "timeout", "inter", "timeout_line"),
    [
        (0, 0, "1s", None),  # HAProxy refuses `inter 0`; no `timeout check`: bounded by inter
        (0, 3, "1s", "timeout check 3s"),
        (4, 0, "4s", None),
    ],
)
def test_zero_delay_and_timeout_are_written_safely(
    delay: int,
    timeout: int,
    inter: str,
    timeout_line: str | None,
    paths: HAProxyPaths,
    workdir: Path,
) -> None:
    """Octavia accepts a 0 delay and timeout; the config must still load."""
    m = member()
    spec = http_lb(
        {"health_monitor": monitor("TCP", delay=delay, timeout=timeout), "members": (m,)}
    )
    be = section(render_valid(spec, paths, workdir), "backend", spec.pools[0].id)
    assert be[-1] == f"server {m.id} 10.0.1.10:8080 weight 1 check inter {inter} fall 3 rise 2"
    checks = [line for line in be if line.startswith("timeout check")]
    assert checks == ([timeout_line] if timeout_line else [])


def test_expected_status_single_and_lists() -> None:
    assert expected_status(None) == ("status", "200")
    assert expected_status("204") == ("status", "204")
    assert expected_status("200,200") == ("status", "200")
    assert expected_status("200, 302") == ("rstatus", "^(?:200|302)$")
    assert expected_status("200-200") == ("status", "200")


ENDPOINTS = [100, 101, 109, 110, 190, 199, 200, 201, 204, 209, 250, 299, 300, 301, 399, 404, 599]


@pytest.mark.parametrize(
    ("lo", "hi"), [(lo, hi) for lo, hi in itertools.combinations_with_replacement(ENDPOINTS, 2)]
)
def test_expected_status_ranges_match_exactly_the_range(lo: int, hi: int) -> None:
    kind, pattern = expected_status(f"{lo}-{hi}")
    assert kind == ("status" if lo == hi else "rstatus")
    matcher = re.compile(pattern if kind == "rstatus" else f"^{pattern}$")
    matched = {code for code in range(100, 600) if matcher.search(str(code))}
    assert matched == set(range(lo, hi + 1))


# --- L7 policies ---------------------------------------------------------------------------

RULE_VALUES: dict[str, dict[str, Any]] = {
    "HOST_NAME": {"value": "www.example.com"},
    "PATH": {"value": "/api/v1"},
    "FILE_TYPE": {"value": "jpg"},
    "HEADER": {"key": "X-Tenant", "value": "gold"},
    "COOKIE": {"key": "session", "value": "abc123"},
    "SSL_CONN_HAS_CERT": {"value": "True"},
    "SSL_VERIFY_RESULT": {"value": "0"},
    "SSL_DN_FIELD": {"key": "businessCategory", "value": "client.example.com"},
}
REGEX_VALUES = {
    "FILE_TYPE": r"\.(jpe?g|png)$",
    "HOST_NAME": r"^(www|api)\.example\.com$",
    # These two ignore the compare type: a certificate is there or not, a result is a number.
    "SSL_CONN_HAS_CERT": "True",
    "SSL_VERIFY_RESULT": "0",
}
MATCH = {
    "REGEX": "-m reg",
    "STARTS_WITH": "-m beg",
    "ENDS_WITH": "-m end",
    "CONTAINS": "-m sub",
    "EQUAL_TO": "-m str",
}


def expected_acl(r: L7RuleSpec) -> str:
    m = MATCH[r.compare_type]
    expressions = {
        "HOST_NAME": f"req.hdr(host),field(1,:) -i {m} '{r.value}'",
        "PATH": f"path {m} '{r.value}'",
        "FILE_TYPE": f"path {m} '{r.value}'" if m == "-m reg" else f"path_end '.{r.value}'",
        "HEADER": f"req.hdr('\"{r.key}\"') {m} '{r.value}'",
        "COOKIE": f"req.cook('\"{r.key}\"') {m} '{r.value}'",
        "SSL_CONN_HAS_CERT": "ssl_c_used",
        "SSL_VERIFY_RESULT": f"ssl_c_verify eq {r.value}",
        "SSL_DN_FIELD": f"ssl_c_s_dn('{r.key}') {m} '{r.value}'",
    }
    return f"acl {r.id} {expressions[r.type]}"


@pytest.mark.parametrize("action", c.L7POLICY_ACTIONS)
@pytest.mark.parametrize("rule_type", c.L7RULE_TYPES)
@pytest.mark.parametrize("compare_type", c.L7RULE_COMPARE_TYPES)
@pytest.mark.parametrize("invert", [False, True])
def test_l7_matrix(
    action: str,
    rule_type: str,
    compare_type: str,
    invert: bool,
    paths: HAProxyPaths,
    workdir: Path,
) -> None:
    values = dict(RULE_VALUES[rule_type])
    if compare_type == "REGEX":
        values["value"] = REGEX_VALUES.get(rule_type, "^" + re.escape(values["value"]))
    r = rule(rule_type, compare_type, invert=invert, **values)
    target = pool()
    default = pool()
    pol = policy(
        action,
        rules=(r,),
        redirect_pool_id=target.id if action == "REDIRECT_TO_POOL" else None,
        redirect_url="https://example.com/moved?from=lb" if action == "REDIRECT_TO_URL" else None,
        redirect_prefix="https://example.com" if action == "REDIRECT_PREFIX" else None,
        redirect_http_code=301 if action.startswith("REDIRECT_") else None,
    )
    lst = listener(default_pool_id=default.id, l7policies=(pol,))
    spec = loadbalancer((lst,), (default, target))
    if rule_type == "FILE_TYPE" and compare_type not in ("EQUAL_TO", "REGEX"):
        with pytest.raises(UnsupportedFeature, match="FILE_TYPE"):
            render_haproxy(spec, paths)
        return
    cfg = render_valid(spec, paths, workdir)

    fe = section(cfg, "frontend", lst.id)
    assert expected_acl(r) in fe
    cond = f"if {'!' if invert else ''}{r.id}"
    action_line = {
        "REJECT": f"http-request deny {cond}",
        "REDIRECT_TO_URL": f"redirect location 'https://example.com/moved?from=lb' code 301 {cond}",
        "REDIRECT_PREFIX": f"redirect prefix 'https://example.com' code 301 {cond}",
        "REDIRECT_TO_POOL": f"use_backend {target.id} {cond}",
    }[action]
    assert action_line in fe
    assert fe[-1] == f"default_backend {default.id}"
    assert (f"backend {target.id}" in cfg) == (action == "REDIRECT_TO_POOL")


def test_l7_precedence_follows_octavia(paths: HAProxyPaths, workdir: Path) -> None:
    """REJECT, then redirects, then pool switches; each group in position order."""
    pools = (pool(), pool(), pool())
    rules = [rule("PATH", "STARTS_WITH", value=f"/p{i}") for i in range(6)]
    policies = (
        policy("REDIRECT_TO_POOL", 1, rules=(rules[0],), redirect_pool_id=pools[1].id),
        policy("REJECT", 6, rules=(rules[1],)),
        policy("REDIRECT_PREFIX", 3, rules=(rules[2],), redirect_prefix="http://b.example"),
        policy("REDIRECT_TO_POOL", 2, rules=(rules[3],), redirect_pool_id=pools[2].id),
        policy("REJECT", 4, rules=(rules[4],)),
        policy("REDIRECT_TO_URL", 5, rules=(rules[5],), redirect_url="http://a.example/x"),
    )
    lst = listener(default_pool_id=pools[0].id, l7policies=policies)
    cfg = render_valid(loadbalancer((lst,), pools), paths, workdir)
    actions = [
        line
        for line in section(cfg, "frontend", lst.id)
        if line.split()[0] in ("http-request", "redirect", "use_backend")
    ]
    assert actions == [
        f"http-request deny if {rules[4].id}",
        f"http-request deny if {rules[1].id}",
        f"redirect prefix 'http://b.example' code 302 if {rules[2].id}",
        f"redirect location 'http://a.example/x' code 302 if {rules[5].id}",
        f"use_backend {pools[1].id} if {rules[0].id}",
        f"use_backend {pools[2].id} if {rules[3].id}",
    ]


def test_l7_rules_are_anded_and_disabled_objects_skipped(
    paths: HAProxyPaths, workdir: Path
) -> None:
    default, target, off_pool = pool(), pool(), pool(admin_state_up=False)
    r1 = rule("HOST_NAME", "EQUAL_TO", value="a.example.com")
    r2 = rule("PATH", "STARTS_WITH", value="/x", invert=True)
    r_off = rule("HEADER", "EQUAL_TO", key="X-Off", value="1", admin_state_up=False)
    kept = policy("REDIRECT_TO_POOL", 1, rules=(r1, r_off, r2), redirect_pool_id=target.id)
    disabled = policy("REJECT", 2, admin_state_up=False)
    no_rules = policy("REJECT", 3, rules=())
    only_disabled_rules = policy("REJECT", 4, rules=(rule(admin_state_up=False),))
    to_disabled_pool = policy("REDIRECT_TO_POOL", 5, redirect_pool_id=off_pool.id)
    to_missing_pool = policy("REDIRECT_TO_POOL", 6, redirect_pool_id=uid())
    lst = listener(
        default_pool_id=default.id,
        l7policies=(
            kept,
            disabled,
            no_rules,
            only_disabled_rules,
            to_disabled_pool,
            to_missing_pool,
        ),
    )
    cfg = render_valid(loadbalancer((lst,), (default, target, off_pool)), paths, workdir)
    fe = section(cfg, "frontend", lst.id)
    assert [line for line in fe if line.startswith("acl ")] == [expected_acl(r1), expected_acl(r2)]
    assert f"use_backend {target.id} if {r1.id} !{r2.id}" in fe
    assert not [line for line in fe if line.startswith(("http-request deny", "redirect"))]
    assert sum(line.startswith("use_backend") for line in fe) == 1
    assert f"backend {off_pool.id}" not in cfg


def test_l7_policies_need_an_http_listener(paths: HAProxyPaths) -> None:
    p = pool("TCP")
    lst = listener("TCP", default_pool_id=p.id, l7policies=(policy("REJECT"),))
    with pytest.raises(UnsupportedFeature, match="HTTP listener"):
        render_haproxy(loadbalancer((lst,), (p,)), paths)


@pytest.mark.parametrize(
    ("pol", "error"),
    [
        ({"action": "REDIRECT_TO_URL", "redirect_url": None}, "redirect_url"),
        ({"action": "REDIRECT_PREFIX", "redirect_prefix": "http://a.example/path"}, "prefix"),
        (
            {
                "action": "REDIRECT_TO_URL",
                "redirect_url": "http://a.example",
                "redirect_http_code": 9,
            },
            "code",
        ),
        ({"action": "SHRUG"}, "unknown action"),
    ],
)
def test_invalid_policies(pol: dict[str, Any], error: str, paths: HAProxyPaths) -> None:
    lst = listener(l7policies=(policy(**pol),))
    with pytest.raises(RenderError, match=error):
        render_haproxy(loadbalancer((lst,)), paths)


@pytest.mark.parametrize(
    ("r", "error"),
    [
        ({"type": "HEADER", "key": None}, "need a key"),
        ({"type": "SSL_DN_FIELD", "key": "1CN"}, "DN field"),
        ({"type": "SSL_DN_FIELD", "key": None}, "DN field"),
        ({"type": "HEADER", "key": 'X-"b"'}, "key"),
        ({"type": "COOKIE", "key": "a)b"}, "key"),
        ({"type": "SSL_VERIFY_RESULT", "value": "ok"}, "integer"),
        ({"type": "PATH", "compare_type": "REGEX", "value": "a(b"}, "regular expression"),
        ({"type": "PATH", "compare_type": "LIKE"}, "compare_type"),
        ({"type": "BODY"}, "unknown type"),
    ],
)
def test_invalid_rules(r: dict[str, Any], error: str, paths: HAProxyPaths) -> None:
    lst = listener(l7policies=(policy(rules=(rule(**r),)),))
    with pytest.raises(RenderError, match=error):
        render_haproxy(loadbalancer((lst,)), paths)


# --- listener options ----------------------------------------------------------------------


def test_insert_headers(paths: HAProxyPaths, workdir: Path) -> None:
    headers = {name: "true" for name in c.INSERT_HEADERS}
    spec = http_lb(insert_headers=headers)
    cfg = render_valid(spec, paths, workdir)
    fe = section(cfg, "frontend", spec.listeners[0].id)
    assert "option forwardfor" in fe
    assert "http-request set-header X-Forwarded-Port %[dst_port]" in fe
    assert "http-request set-header X-Forwarded-Proto http" in fe
    # The X-SSL-* headers only exist with TLS termination.
    assert not [line for line in fe if "X-SSL" in line or "ssl_c" in line]


@pytest.mark.parametrize("value", ["false", "False", "no", ""])
def test_insert_headers_off(value: str, paths: HAProxyPaths) -> None:
    spec = http_lb(insert_headers=dict.fromkeys(c.INSERT_HEADERS, value))
    fe = section(render_haproxy(spec, paths), "frontend", spec.listeners[0].id)
    assert not [line for line in fe if "forward" in line.lower()]


def test_insert_headers_ignored_on_tcp(paths: HAProxyPaths, workdir: Path) -> None:
    p = pool("TCP")
    lst = listener("TCP", default_pool_id=p.id, insert_headers={"X-Forwarded-For": "true"})
    cfg = render_valid(loadbalancer((lst,), (p,)), paths, workdir)
    assert "forwardfor" not in cfg and "set-header" not in cfg


@pytest.mark.parametrize(
    ("vip", "cidrs", "rendered"),
    [
        (VIP4, ("10.0.0.0/8",), "10.0.0.0/8"),
        (
            VIP4,
            ("192.168.1.7/24", "172.16.0.0/12", "192.168.1.0/24"),
            "192.168.1.0/24 172.16.0.0/12",
        ),
        (VIP6, ("2001:DB8:0:0::/32", "fd00::1/128"), "2001:db8::/32 fd00::1/128"),
    ],
)
@pytest.mark.parametrize("protocol", ["HTTP", "TCP"])
def test_allowed_cidrs(
    vip: str,
    cidrs: tuple[str, ...],
    rendered: str,
    protocol: str,
    paths: HAProxyPaths,
    workdir: Path,
) -> None:
    p = pool(protocol)
    lst = listener(protocol, default_pool_id=p.id, allowed_cidrs=cidrs)
    cfg = render_valid(loadbalancer((lst,), (p,), vip=vip), paths, workdir)
    fe = section(cfg, "frontend", lst.id)
    assert f"tcp-request connection reject unless {{ src {rendered} }}" in fe


@pytest.mark.parametrize("cidrs", [None, ()])
def test_no_allowed_cidrs_means_everyone(
    cidrs: tuple[str, ...] | None, paths: HAProxyPaths
) -> None:
    assert "tcp-request connection" not in render_haproxy(http_lb(allowed_cidrs=cidrs), paths)


def test_bad_cidr_is_refused(paths: HAProxyPaths) -> None:
    with pytest.raises(RenderError, match="allowed_cidr"):
        render_haproxy(http_lb(allowed_cidrs=("10.0.0.0/33",)), paths)


@pytest.mark.parametrize("protocol", ["HTTP", "TCP"])
def test_timeouts_and_connection_limit(protocol: str, paths: HAProxyPaths, workdir: Path) -> None:
    p = pool(protocol)
    lst = listener(
        protocol,
        default_pool_id=p.id,
        connection_limit=250,
        timeout_client_data=1000,
        timeout_member_connect=2000,
        timeout_member_data=3000,
        timeout_tcp_inspect=400,
    )
    spec = loadbalancer((lst,), (p,))
    cfg = render_valid(spec, paths, workdir)
    fe = section(cfg, "frontend", spec.listeners[0].id)
    assert "maxconn 250" in fe
    assert "timeout client 1000" in fe
    assert "tcp-request inspect-delay 400" in fe
    be = section(cfg, "backend", spec.pools[0].id)
    assert "timeout connect 2000" in be and "timeout server 3000" in be


@pytest.mark.parametrize("limit", [-1, 0])
def test_unlimited_listener_gets_global_maxconn(limit: int, paths: HAProxyPaths) -> None:
    spec = http_lb(connection_limit=limit)
    cfg = render_haproxy(spec, paths, maxconn=1234)
    assert "    maxconn 1234\n" in cfg.split("defaults")[0]
    assert "maxconn 1234" in section(cfg, "frontend", spec.listeners[0].id)


def test_maxconn_must_be_positive(paths: HAProxyPaths) -> None:
    with pytest.raises(RenderError, match="maxconn"):
        render_haproxy(http_lb(), paths, maxconn=0)


def test_global_maxconn_sums_the_listeners_within_the_fd_limit(paths: HAProxyPaths) -> None:
    lb = http_lb(connection_limit=300)
    other = lb.listeners[0].model_copy(
        update={"id": uid(), "protocol_port": 81, "connection_limit": -1}
    )
    off = other.model_copy(update={"id": uid(), "protocol_port": 82, "admin_state_up": False})
    spec = lb.model_copy(update={"listeners": (lb.listeners[0], other, off)})
    assert instance_maxconn(spec) == 300 + DEFAULT_LISTENER_MAXCONN
    assert instance_maxconn(spec, listener_maxconn=100) == 400
    assert instance_maxconn(spec, listener_maxconn=100_000) == MAXCONN_CAP
    assert instance_maxconn(spec.model_copy(update={"listeners": ()})) == DEFAULT_LISTENER_MAXCONN
    cfg = render_haproxy(spec, paths, listener_maxconn=100, nbthread=2)
    head = cfg.split("defaults")[0]
    assert "    maxconn 400\n" in head and "    nbthread 2\n" in head
    assert "maxconn 100" in section(cfg, "frontend", other.id)
    with pytest.raises(RenderError, match="nbthread"):
        render_haproxy(spec, paths, nbthread=0)


def test_default_maxconn_fits_the_fd_limit() -> None:
    assert maxconn_for_fd_limit(20000) == MAXCONN_CAP == 8000
    assert maxconn_for_fd_limit(1_048_576) > 400_000
    with pytest.raises(ValueError):
        maxconn_for_fd_limit(5)


def test_shared_pool_is_one_backend(paths: HAProxyPaths, workdir: Path) -> None:
    """A pool used by several listeners: one backend, timeouts from its default listener."""
    shared, other = pool(), pool()
    owner = listener(default_pool_id=shared.id, timeout_member_connect=1111)
    switcher = listener(
        protocol_port=8080,
        default_pool_id=other.id,
        timeout_member_connect=2222,
        l7policies=(policy("REDIRECT_TO_POOL", redirect_pool_id=shared.id),),
    )
    tcp = listener("TCP", protocol_port=9000, default_pool_id=shared.id)
    cfg = render_valid(loadbalancer((switcher, owner, tcp), (shared, other)), paths, workdir)
    assert cfg.count(f"\nbackend {shared.id}\n") == 1
    assert "timeout connect 1111" in section(cfg, "backend", shared.id)
    assert "mode http" in section(cfg, "backend", shared.id)
    assert "mode tcp" in section(cfg, "frontend", tcp.id)


@pytest.mark.parametrize("hm_type", [None, "HTTPS", "TLS-HELLO"])
def test_tls_to_members(hm_type: str | None, paths: HAProxyPaths, workdir: Path) -> None:
    m = member(protocol_port=443)
    hm = monitor(hm_type) if hm_type else None
    spec = http_lb({"tls_enabled": True, "members": (m,), "health_monitor": hm})
    cfg = render_valid(spec, paths, workdir)
    assert section(cfg, "backend", spec.pools[0].id)[-1].startswith(f"server {m.id} 10.0.1.10:443")
    assert section(cfg, "backend", spec.pools[0].id)[-1].endswith(" ssl verify none sni ssl_fc_sni")


def test_pool_without_members(paths: HAProxyPaths, workdir: Path) -> None:
    spec = http_lb({"members": (), "health_monitor": monitor("HTTP")})
    cfg = render_valid(spec, paths, workdir)
    assert not [
        line for line in section(cfg, "backend", spec.pools[0].id) if line.startswith("server")
    ]


# --- IPv6 and disabled objects -------------------------------------------------------------


def test_ipv6_vip_and_members(paths: HAProxyPaths, workdir: Path) -> None:
    m6 = member(address="2001:DB8:0::10")
    m4 = member(address="10.0.1.10")
    p = pool(members=(m6, m4))
    spec = loadbalancer((listener(protocol_port=8443, default_pool_id=p.id),), (p,), vip=VIP6)
    cfg = render_valid(spec, paths, workdir)
    assert f"bind [{VIP6}]:8443" in section(cfg, "frontend", spec.listeners[0].id)
    be = section(cfg, "backend", p.id)
    assert f"server {m6.id} [2001:db8::10]:8080 weight 1" in be
    assert f"server {m4.id} 10.0.1.10:8080 weight 1" in be


def test_disabled_objects(paths: HAProxyPaths, workdir: Path) -> None:
    drained = member(weight=0)
    backup = member(address="10.0.1.11", backup=True)
    down = member(address="10.0.1.12", admin_state_up=False)
    live = pool(members=(drained, backup, down))
    off = pool(admin_state_up=False)
    only_for_disabled = pool()
    on = listener(default_pool_id=live.id)
    pool_off = listener(protocol_port=81, default_pool_id=off.id)
    disabled = listener(
        protocol_port=82, default_pool_id=only_for_disabled.id, admin_state_up=False
    )
    spec = loadbalancer((on, pool_off, disabled), (live, off, only_for_disabled))
    cfg = render_valid(spec, paths, workdir)

    assert f"frontend {disabled.id}" not in cfg  # Octavia does not render disabled listeners
    assert f"backend {only_for_disabled.id}" not in cfg
    assert f"backend {off.id}" not in cfg
    assert not [line for line in section(cfg, "frontend", pool_off.id) if "backend" in line]
    be = section(cfg, "backend", live.id)
    assert f"server {drained.id} 10.0.1.10:8080 weight 0" in be
    assert f"server {backup.id} 10.0.1.11:8080 weight 1 backup" in be
    assert f"server {down.id} 10.0.1.12:8080 weight 1 disabled" in be
    assert "disabled" not in section(cfg, "frontend", on.id)


def test_disabled_load_balancer_keeps_a_valid_config(paths: HAProxyPaths, workdir: Path) -> None:
    p = pool()
    listeners = (listener(default_pool_id=p.id), listener(protocol_port=81))
    spec = loadbalancer(listeners, (p,), admin_state_up=False)
    cfg = render_valid(spec, paths, workdir)
    for lst in spec.listeners:
        assert section(cfg, "frontend", lst.id)[0] == "disabled"
    assert f"backend {p.id}" in cfg


@pytest.mark.parametrize(
    "change",
    [
        {"weight": 257},
        {"weight": -1},
        {"protocol_port": 0},
        {"protocol_port": 65536},
        {"monitor_port": 70000},
        {"address": "10.0.0.300"},
        {"address": "backend.example.com"},
        {"monitor_address": "10.0.0.1 port 1"},
    ],
)
def test_invalid_member_values(change: dict[str, Any], paths: HAProxyPaths) -> None:
    spec = http_lb({"members": (member(**change),), "health_monitor": monitor("TCP")})
    with pytest.raises(RenderError):
        render_haproxy(spec, paths)


# --- peers ---------------------------------------------------------------------------------


def test_peers_section(paths: HAProxyPaths, workdir: Path) -> None:
    sp = SessionPersistenceSpec(type="SOURCE_IP")
    spec = http_lb({"session_persistence": sp})
    cfg = render_valid(spec, paths, workdir, peers=PEERS)
    assert "    localpeer inst-a\n" in cfg
    assert section(cfg, "peers", "openha_peers") == [
        "peer inst-a 10.0.0.2:1024",
        "peer inst-b [2001:db8::3]:1024",
    ]
    assert "stick-table type ip size 10k peers openha_peers" in cfg


@pytest.mark.parametrize(
    "kw",
    [
        {"local_peer": "inst-c", "peers": [{"name": "inst-a", "address": "10.0.0.2", "port": 1}]},
        {"local_peer": "a", "peers": [{"name": "a", "address": "10.0.0.2", "port": 1}] * 2},
        {"local_peer": "a b", "peers": [{"name": "a b", "address": "10.0.0.2", "port": 1}]},
        {"local_peer": "a", "peers": [{"name": "a", "address": "10.0.0.2\n", "port": 1}]},
        {"local_peer": "a", "peers": [{"name": "a", "address": "10.0.0.2", "port": 0}]},
        {"local_peer": "a", "peers": []},
    ],
)
def test_invalid_peers(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        PeersSpec(**kw)


# --- hostile values ------------------------------------------------------------------------

# Anything that could end a token, a quote or a line. Free-form values (L7 values and
# regexes) take them all, written as one HAProxy word; shaped values refuse them.
BREAKOUTS = [
    "a\nb",
    "trailing\n",  # Python's '$' matches before a final newline: the grammars alone let it by
    "a\rb",
    "a\x00b",
    "a\tb",
    "a'b",
    "x'\n    server evil 1.2.3.4:80 '",
    "/\n    server evil 1.2.3.4:80",
    "\\n    server evil 1.2.3.4:80\n",
    "caf\u00e9",
    "\u2028",
]
# Also refused where the grammar is a token, host name, URL or path.
STRICT_ONLY = ['a"b', "a b", "a%[src]b", "a\\b"]
# HTTP tokens (header and cookie names) may hold '#', which stays inside the quotes.
TOKEN_FIELDS = ("header key", "cookie key", "cookie name")


def _with_rule(**kw: Any) -> LoadBalancerSpec:
    p = pool()
    r = rule(**kw)
    pol = policy("REDIRECT_TO_POOL", rules=(r,), redirect_pool_id=p.id)
    return loadbalancer((listener(default_pool_id=p.id, l7policies=(pol,)),), (p,))


def _with_policy(**kw: Any) -> LoadBalancerSpec:
    return loadbalancer((listener(l7policies=(policy(**kw),)),))


def _with_monitor(**kw: Any) -> LoadBalancerSpec:
    return http_lb({"health_monitor": monitor("HTTP", **kw)})


def _with_cookie(name: str) -> LoadBalancerSpec:
    sp = SessionPersistenceSpec(type="APP_COOKIE", cookie_name=name)
    return http_lb({"session_persistence": sp})


FREE_FIELDS = {
    "rule value": lambda v: _with_rule(value=v),
    "regex value": lambda v: _with_rule(compare_type="REGEX", value=v),
    "host rule value": lambda v: _with_rule(type="HOST_NAME", compare_type="EQUAL_TO", value=v),
}
STRICT_FIELDS = {
    "header key": lambda v: _with_rule(type="HEADER", key=v, value="x"),
    "cookie key": lambda v: _with_rule(type="COOKIE", key=v, value="x"),
    "redirect url": lambda v: _with_policy(action="REDIRECT_TO_URL", redirect_url=f"http://a/{v}"),
    "redirect prefix": lambda v: _with_policy(
        action="REDIRECT_PREFIX", redirect_prefix=f"http://{v}"
    ),
    "url path": lambda v: _with_monitor(url_path=f"/{v}"),
    "domain name": lambda v: _with_monitor(domain_name=f"{v}.example.com"),
    "http method": lambda v: _with_monitor(http_method=f"GET{v}"),
    "expected codes": lambda v: _with_monitor(expected_codes=f"200{v}"),
    "cookie name": _with_cookie,
    "listener id": lambda v: loadbalancer((listener(id=f"l{v}"),)),
    "pool id": lambda v: http_lb({"id": f"p{v}"}),
    "member id": lambda v: http_lb({"members": (member(id=f"m{v}"),)}),
    "rule id": lambda v: _with_rule(id=f"r{v}"),
    "member address": lambda v: http_lb({"members": (member(address=f"10.0.0.1{v}"),)}),
    "monitor address": lambda v: http_lb(
        {"members": (member(monitor_address=f"10.0.0.1{v}"),), "health_monitor": monitor("TCP")}
    ),
    "vip": lambda v: loadbalancer((listener(),), vip=f"10.0.0.5{v}"),
    "allowed cidr": lambda v: http_lb(allowed_cidrs=(f"10.0.0.0/8{v}",)),
    "lb id": lambda v: loadbalancer(id=f"lb{v}"),
}


# Header and cookie names take an apostrophe, as in Octavia's grammar (see
# test_octavia_l7_keys_and_values_through_a_live_haproxy).
NAME_FIELDS = ("header key", "cookie key")


@pytest.mark.parametrize(
    ("field", "value"),
    [(f, v) for f in STRICT_FIELDS for v in BREAKOUTS if not (f in NAME_FIELDS and v == "a'b")],
)
def test_breakout_values_are_refused_in_shaped_fields(
    field: str, value: str, paths: HAProxyPaths
) -> None:
    with pytest.raises(RenderError):
        render_haproxy(STRICT_FIELDS[field](value), paths)


@pytest.mark.parametrize("value", [v for v in BREAKOUTS if "\x00" not in v])
@pytest.mark.parametrize("field", FREE_FIELDS)
def test_breakout_values_stay_one_word_in_free_fields(
    field: str, value: str, paths: HAProxyPaths, workdir: Path
) -> None:
    """Accepted, and the configuration still loads with the value as one ACL pattern."""
    spec = FREE_FIELDS[field](value)
    cfg = render_valid(spec, paths, workdir)
    r = spec.listeners[0].l7policies[0].rules[0]
    lines = cfg.split("\n")  # HAProxy ends lines at LF only (not at U+2028, not at CR)
    acl = next(line for line in lines if line.startswith(f"    acl {r.id} "))
    assert acl.endswith(" " + quote(value)), acl
    assert "\r" not in cfg
    assert not [line for line in lines if line.strip().startswith("server evil")]


@pytest.mark.parametrize("field", [*FREE_FIELDS, *STRICT_FIELDS])
def test_nul_is_refused_everywhere(field: str, paths: HAProxyPaths) -> None:
    build = {**FREE_FIELDS, **STRICT_FIELDS}[field]
    with pytest.raises(RenderError):
        render_haproxy(build("a\x00b"), paths)


@pytest.mark.parametrize("value", STRICT_ONLY)
@pytest.mark.parametrize("field", STRICT_FIELDS)
def test_strict_fields_refuse_quotes_and_spaces(
    field: str, value: str, paths: HAProxyPaths
) -> None:
    with pytest.raises(RenderError):
        render_haproxy(STRICT_FIELDS[field](value), paths)


@pytest.mark.parametrize("field", [f for f in STRICT_FIELDS if f not in TOKEN_FIELDS])
def test_strict_fields_refuse_hashes(field: str, paths: HAProxyPaths) -> None:
    with pytest.raises(RenderError):
        render_haproxy(STRICT_FIELDS[field]("a#b"), paths)


def test_hash_in_a_token_stays_quoted(paths: HAProxyPaths, workdir: Path) -> None:
    spec = _with_rule(type="COOKIE", compare_type="EQUAL_TO", key="sess#1", value="x")
    r = spec.listeners[0].l7policies[0].rules[0]
    cfg = render_valid(spec, paths, workdir)
    assert f"    acl {r.id} req.cook('\"sess#1\"') -m str 'x'\n" in cfg


def test_harmless_characters_stay_inside_strong_quotes(paths: HAProxyPaths, workdir: Path) -> None:
    """Inside '...' HAProxy interprets nothing: #, ", \\, $ and %[] are plain text there."""
    value = 'a "b" #c \\n ${HOME} %[src] ;'
    spec = _with_rule(type="PATH", compare_type="EQUAL_TO", value=value)
    r = spec.listeners[0].l7policies[0].rules[0]
    cfg = render_valid(spec, paths, workdir)
    assert f"    acl {r.id} path -m str '{value}'\n" in cfg


@pytest.mark.parametrize(
    "kw",
    [
        {"stats_socket": "relative.sock"},
        {"stats_socket": "/run/s.sock\n"},
        {"stats_socket": "/tmp/it's.sock"},
        {"log_socket": "/tmp/log\n    server evil 1.2.3.4:80"},
        {"log_socket": "/tmp/" + "x" * 120},
        {"syslog_socket": "/tmp/s'.sock"},
        {"state_dir": "/var/lib/../../etc"},
        {"state_dir": "/tmp/\x00"},
        {"chroot": "relative"},
        {"chroot": "/tmp/r'oot"},
    ],
)
def test_hostile_paths_are_refused(kw: dict[str, str]) -> None:
    fields = {
        "stats_socket": "/run/s.sock",
        "chroot": "/run/root",
        "log_socket": "/run/l.sock",
        "syslog_socket": "/run/y.sock",
        "state_dir": "/run",
    }
    with pytest.raises(ValueError):
        HAProxyPaths(**{**fields, **kw})


def test_quote_and_ident_filters() -> None:
    assert quote("/a b") == "'/a b'"
    assert quote("it's") == "'it'\\''s'"
    assert quote("'") == "\\'"
    assert quote("a\nb\tc\x7f") == "'a'\\x0a'b'\\x09'c'\\x7f"
    for bad in ("", "a\x00b", 5, None):
        with pytest.raises(RenderError):
            quote(bad)
    assert ident("6b1c1a52-0f4e-4a55-9a53-3c0f0d1e2f3a") == "6b1c1a52-0f4e-4a55-9a53-3c0f0d1e2f3a"
    for bad in ("", "-x", "a b", "a'b", "a\n", "a#b", "x" * 101, 7):
        with pytest.raises(RenderError):
            ident(bad)


# --- a real HAProxy serving the rendered configuration -------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Echo(http.server.BaseHTTPRequestHandler):
    """Answers with the server's name and the forwarding headers it received."""

    def do_GET(self) -> None:
        body = "|".join(
            [
                self.server.name,  # type: ignore[attr-defined]
                self.headers.get("X-Forwarded-For", "-"),
                self.headers.get("X-Forwarded-Port", "-"),
                self.headers.get("X-Forwarded-Proto", "-"),
            ]
        ).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def echo_servers() -> Iterator[list[int]]:
    servers = []
    for name in ("default", "switched"):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
        server.name = name  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield [int(s.server_address[1]) for s in servers]
    for server in servers:
        server.shutdown()
        server.server_close()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=5) as response:
            return response.status, response.read().decode(), ""
    except urllib.error.HTTPError as exc:
        return exc.code, "", exc.headers.get("Location", "")


@contextlib.contextmanager
def _serving(cfg: str, port: int, workdir: Path) -> Iterator[None]:
    """HAProxy in the foreground on `cfg` for the block, once `port` accepts connections."""
    path = workdir / f"live-{uid()}.cfg"
    path.write_text(cfg)
    proc = subprocess.Popen(
        [HAPROXY, "-db", "-f", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=SANDBOX_ENV,
    )
    try:
        for _ in range(100):
            if proc.poll() is not None:
                output = proc.stdout.read().decode() if proc.stdout else ""
                pytest.fail(f"haproxy exited:\n{output}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_real_haproxy_serves_the_rendered_config(
    echo_servers: list[int], paths: HAProxyPaths, workdir: Path
) -> None:
    default = pool(members=(member(address="127.0.0.1", protocol_port=echo_servers[0]),))
    switched = pool(members=(member(address="127.0.0.1", protocol_port=echo_servers[1]),))
    odd = 'v"1#2\\n'  # must match literally: nothing is interpreted inside strong quotes
    policies = (
        policy("REDIRECT_TO_POOL", 1, rules=(rule(value="/sw"),), redirect_pool_id=switched.id),
        # Position 2, yet it beats the switch above: REJECT always comes first in Octavia.
        policy("REJECT", 2, rules=(rule("PATH", "CONTAINS", value="deny"),)),
        # An apostrophe, written between two strongly quoted runs, still matches as text.
        policy("REJECT", 4, rules=(rule("HEADER", "CONTAINS", key="X-Note", value="it's"),)),
        policy(
            "REDIRECT_PREFIX",
            3,
            rules=(rule("HEADER", "EQUAL_TO", key="X-Odd", value=odd),),
            redirect_prefix="https://elsewhere.example",
            redirect_http_code=308,
        ),
    )
    port = _free_port()
    headers = dict.fromkeys(("X-Forwarded-For", "X-Forwarded-Port", "X-Forwarded-Proto"), "true")
    lst = listener(
        protocol_port=port, default_pool_id=default.id, insert_headers=headers, l7policies=policies
    )
    spec = loadbalancer((lst,), (default, switched), vip="127.0.0.1")
    cfg = render_valid(spec, paths, workdir)
    # Started in the foreground under the host's FD limit: the default maxconn must fit.
    with _serving(cfg, port, workdir):
        assert _get(port, "/") == (200, f"default|127.0.0.1|{port}|http", "")
        assert _get(port, "/sw/x")[1].startswith("switched|")
        assert _get(port, "/sw/deny")[0] == 403
        assert _get(port, "/x", {"X-Odd": odd}) == (308, "", "https://elsewhere.example/x")
        assert _get(port, "/x", {"X-Odd": 'v"1#2'})[0] == 200  # no escape was interpreted
        assert _get(port, "/x", {"X-Note": "so it's here"})[0] == 403
        assert _get(port, "/x", {"X-Note": "its"})[0] == 200


def test_octavia_l7_keys_and_values_through_a_live_haproxy(
    echo_servers: list[int], paths: HAProxyPaths, workdir: Path
) -> None:
    """What Octavia's L7 grammars take, written so that HAProxy matches it as meant.

    Header and cookie names may hold an apostrophe or a comma (written in double quotes
    inside the fetch's strongly quoted argument); a host name may carry a port (then the
    whole Host header is compared); a path need not start with a slash; a value with a
    blank comes in double quotes, which are syntax; an empty quoted value matches nothing.
    """
    default = pool(members=(member(address="127.0.0.1", protocol_port=echo_servers[0]),))
    switched = pool(members=(member(address="127.0.0.1", protocol_port=echo_servers[1]),))
    port = _free_port()
    rules = [
        rule("HEADER", "EQUAL_TO", key="X-It's", value="yes"),
        rule("COOKIE", "EQUAL_TO", key="o'k", value="yes"),
        # No client can send this name (HAProxy answers 400 to a comma in a header
        # name), but the configuration holding it must load.
        rule("HEADER", "EQUAL_TO", key="X-A,B", value="yes"),
        rule("COOKIE", "EQUAL_TO", key="c,d", value="yes"),
        rule("HOST_NAME", "EQUAL_TO", value=f"www.example.com:{port}"),
        rule("HOST_NAME", "EQUAL_TO", value="api.example.com"),
        rule("PATH", "EQUAL_TO", value='"/a b"'),
        rule("PATH", "EQUAL_TO", value="no-slash"),
        rule("PATH", "EQUAL_TO", value='""'),
        rule("FILE_TYPE", "EQUAL_TO", value='""'),
    ]
    policies = tuple(
        policy("REDIRECT_TO_POOL", i, rules=(r,), redirect_pool_id=switched.id)
        for i, r in enumerate(rules, 1)
    )
    lst = listener(protocol_port=port, default_pool_id=default.id, l7policies=policies)
    spec = loadbalancer((lst,), (default, switched), vip="127.0.0.1")
    cfg = render_valid(spec, paths, workdir)
    assert f"acl {rules[0].id} req.hdr('\"X-It'\\''s\"') -m str 'yes'" in cfg
    assert f"acl {rules[4].id} req.hdr(host) -i -m str 'www.example.com:{port}'" in cfg
    assert f"acl {rules[8].id} path -m str --" in cfg

    def served_by(path: str = "/", **headers: str) -> str:
        return _get(port, path, headers)[1].split("|")[0]

    with _serving(cfg, port, workdir):
        assert served_by() == "default"
        assert served_by(**{"X-It's": "yes"}) == "switched"
        assert served_by(**{"X-Its": "yes", "X-It": "yes"}) == "default"
        assert served_by(Cookie="a=1; o'k=yes") == "switched"
        assert served_by(Cookie="ok=yes") == "default"
        assert served_by(Host=f"www.example.com:{port}") == "switched"
        assert served_by(Host="www.example.com") == "default"
        assert served_by(Host=f"api.example.com:{port}") == "switched"
        assert served_by("/a%20b") == "default"  # `path` is not decoded
        assert served_by("/no-slash") == "default"
        assert served_by("/x.") == "default"  # the empty file type matches nothing


# Every character class the writer handles: quoted runs, apostrophes, control characters
# (as \xNN), and what strong quotes keep literal ($, #, \, ", %[ ]), plus non-ASCII.
ROUND_TRIP = [
    "it's",
    "'",
    "''a'",
    "tab\there",
    "line\nbreak\r",
    "bell\x07 del\x7f",
    "back\\slash \\x41 \\'",
    '$HOME ${X} #hash "dq" %[src]',
    "caf\u00e9 \u2603 \u2028",
    "  spaced  ",
]


def test_quoted_words_reach_haproxy_unchanged(workdir: Path) -> None:
    """HAProxy itself parses each written word back to exactly the value.

    `http-request return ... string <word>` answers with the word as HAProxy read it.
    """
    if not Path(HAPROXY).exists():
        pytest.skip("haproxy is not installed")
    port = _free_port()
    rules = "\n".join(
        f"    http-request return status 200 content-type text/plain string {quote(v)}"
        f" if {{ path /{i} }}"
        for i, v in enumerate(ROUND_TRIP)
    )
    cfg = (
        "defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n"
        f"    timeout server 5s\n\nfrontend echo\n    bind 127.0.0.1:{port}\n{rules}\n"
    )
    assert_valid(cfg, workdir)
    with _serving(cfg, port, workdir):
        for i, value in enumerate(ROUND_TRIP):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/{i}", timeout=5) as response:
                assert response.read() == value.encode(), value


def test_wildcard_host_name_matches_subdomains(paths: HAProxyPaths, workdir: Path) -> None:
    r = rule("HOST_NAME", "EQUAL_TO", value="*.example.com")
    spec = http_lb(l7policies=(policy(rules=(r,)),))
    cfg = render_valid(spec, paths, workdir)
    assert f"acl {r.id} req.hdr(host),field(1,:) -i -m end '.example.com'" in cfg


def test_double_quoted_header_value_is_unwrapped(paths: HAProxyPaths, workdir: Path) -> None:
    r = rule("HEADER", "EQUAL_TO", key="X-Tier", value='"gold plus"')
    spec = http_lb(l7policies=(policy(rules=(r,)),))
    cfg = render_valid(spec, paths, workdir)
    assert f"acl {r.id} req.hdr('\"X-Tier\"') -m str 'gold plus'" in cfg


def test_access_log_errors_only(paths: HAProxyPaths, workdir: Path) -> None:
    spec = http_lb()
    assert "option dontlog-normal" not in render_valid(spec, paths, workdir)
    assert "option dontlog-normal" in render_valid(spec, paths, workdir, access_log="errors")
    silent = render_valid(spec, paths, workdir, access_log="none")
    assert "    no log\n" in silent and "log-format" not in silent
    with pytest.raises(RenderError):
        render_haproxy(spec, paths, access_log="verbose")  # type: ignore[arg-type]


def test_access_log_lines_are_json_built_by_haproxy(paths: HAProxyPaths, workdir: Path) -> None:
    spec = http_lb()
    cfg = render_valid(spec, paths, workdir, instance_id="i-1", request_id_header=True)
    fmt = access_log_format("http", spec.id, "i-1", spec.project_id)
    # With every %-directive replaced by a number, the format is a JSON object.
    sample = json.loads(re.sub(r"%\[[^]]*\]|%\{[^}]*\}\w+|%\w+", "0", fmt))
    assert sample["lb"] == spec.id and sample["instance"] == "i-1"
    assert sample["project"] == spec.project_id and sample["kind"] == "access"
    for key in ("listener", "pool", "member", "client", "client_port", "method", "path",
                "status", "bytes_in", "bytes_out", "tq", "tw", "tc", "tr", "ta",
                "termination", "retries", "request_id"):  # fmt: skip
        assert key in sample
    # Whatever a client sends reaches the line only through HAProxy's JSON encoder.
    assert "%[capture.req.uri,json(utf8s)]" in fmt
    assert not re.search(r"%(r\b|HU|HP|HQ|HM|hr|hs|CC|CS)", fmt)
    assert "    unique-id-header X-Request-Id\n" in cfg
    tcp = access_log_format("tcp", spec.id, "i-1", "p1")
    assert "status" not in tcp and json.loads(re.sub(r"%\w+", "0", tcp))["listener"] == "0"


def test_a_project_id_that_is_not_plain_stays_out_of_the_lines() -> None:
    assert '"project"' not in access_log_format("http", "lb", "i", 'p"1')
    assert '"project"' not in access_log_format("http", "lb", "i", "p%{+X}o")
    assert '"project":"p-1"' in access_log_format("http", "lb", "i", "p-1")


def test_log_ring_size_is_bounded(paths: HAProxyPaths) -> None:
    assert "    size 262144\n" in render_haproxy(http_lb(), paths, log_ring_size=1 << 18)
    with pytest.raises(RenderError):
        render_haproxy(http_lb(), paths, log_ring_size=10)
