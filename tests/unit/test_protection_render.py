"""Protection profiles rendered: map files, the HAProxy frame, and a real HAProxy enforcing them.

The frame must not depend on the limits' values (under-attack mode changes only the
maps, so no reload), must pass `haproxy -c` without a warning in every shape (HTTP,
TCP, IPv6, a pair's peers), and a real HAProxy must throttle, refuse and exempt as
the maps say, the maps being replaced through the runtime API with the same process.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from openha.agent.haproxy import changed_maps, cli_command, runtime_changes, tls_runtime_changes
from openha.agent.metrics import InstancesCollector
from openha.agent.runtime_maps import chunks, refresh_limits, replace_map
from openha.agent.toptalkers import limits_in_force, parse_show_table, top_talkers
from openha.domain import constants as c
from openha.domain.protection import UNLIMITED, PathLimit, ProtectionSettings
from openha.domain.spec import InstanceSpec
from openha.providers.haproxy import instance_spec
from openha.render.haproxy import HAProxyPaths, PeerSpec, PeersSpec, RenderError, render_haproxy
from openha.render.protection import (
    ALLOW_MAP,
    DENY_MAP,
    FLOOD_FACTOR,
    INTERNAL_PROXY_PREFIX,
    LIMITS_MAP,
    PATHS_MAP,
    TARPIT_TIMEOUT_MS,
    ProtectionRenderError,
    map_files,
)
from openha.settings import Settings
from tests.unit.test_haproxy_instance_spec import lb_spec, placed
from tests.unit.test_render_haproxy import (
    HAPROXY,
    SANDBOX_ENV,
    VIP6,
    assert_valid,
    http_lb,
    listener,
    loadbalancer,
    member,
    policy,
    pool,
    rule,
)

PROFILE = ProtectionSettings(
    max_connections=20,
    connection_rate=200,
    request_rate=50,
    error_rate=30,
    timeout_http_request=5000,
    timeout_client_max=30000,
    max_header_bytes=8192,
    max_header_count=50,
    deny=["198.51.100.0/24"],
    allow=["192.0.2.1"],
    path_limits=[
        PathLimit(path_prefix="/l", request_rate=9),
        PathLimit(path_prefix="/login", request_rate=5),
    ],
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ohp")
    (path / "server-state").write_text("1\n")
    (path / "files").mkdir()
    return path


def haproxy_paths(workdir: Path) -> HAProxyPaths:
    (workdir / "root").mkdir(exist_ok=True)  # the sandbox's chroot (agent.sandbox)
    return HAProxyPaths(
        stats_socket=str(workdir / "stats.sock"),
        chroot=str(workdir / "root"),
        log_socket=str(workdir / "log.sock"),
        syslog_socket=str(workdir / "syslog.sock"),
        state_dir=str(workdir),
        files_dir=str(workdir / "files"),
        protect_socket=str(workdir / "protect.sock"),
    )


def write_maps(workdir: Path, settings: ProtectionSettings | None) -> None:
    for name, content in map_files(settings).items():
        (workdir / "files" / name).write_text(content)


def load_maps(workdir: Path, settings: ProtectionSettings) -> None:
    """What the agent does for a running HAProxy: every map through the runtime API,
    then the thresholds read again from the new limits map (`refresh_limits`)."""
    paths = haproxy_paths(workdir)
    for name, content in map_files(settings).items():
        (workdir / "files" / name).write_text(content)
        replace_map(lambda command: cli_command(Path(paths.stats_socket), command),
                    str(workdir / "files" / name), content)  # fmt: skip
    refresh_limits(Path(str(paths.protect_socket)))


# --- map files -----------------------------------------------------------------------------


def test_map_files_hold_every_threshold_and_list() -> None:
    files = map_files(PROFILE)
    limits = dict(line.split() for line in files[LIMITS_MAP].splitlines())
    assert limits == {
        "conn_cur": "20",
        "conn_rate": "200",
        "req_rate": "50",
        "err_rate": "30",
        "hdr_bytes": "8192",
        "hdr_count": "50",
        "action": "1",
        "retry_after": "10",
        "p0": "9",
        "p1": "5",
        "hdr_on": "1",
        "paths_on": "1",
    }
    assert files[DENY_MAP] == "198.51.100.0/24 1\n"
    assert files[ALLOW_MAP] == "192.0.2.1/32 1\n"
    # The longest prefix first: HAProxy's map_beg answers the first match in file order.
    assert files[PATHS_MAP] == "/login p1\n/l p0\n"
    unlimited = dict(
        line.split() for line in map_files(ProtectionSettings())[LIMITS_MAP].splitlines()
    )
    assert unlimited["req_rate"] == str(UNLIMITED)
    assert (unlimited["hdr_on"], unlimited["paths_on"]) == ("0", "0")  # their checks are off
    assert map_files(None) == dict.fromkeys((LIMITS_MAP, DENY_MAP, ALLOW_MAP, PATHS_MAP), "")


@pytest.mark.parametrize("prefix", ["/a b", "/a\nb", "/a'b", '/a"b', "/a#b", "x", "/a\\b"])
def test_a_path_prefix_that_escaped_validation_is_still_refused(prefix: str) -> None:
    with pytest.raises(ValidationError):
        PathLimit(path_prefix=prefix, request_rate=1)
    smuggled = ProtectionSettings.model_construct(
        path_limits=[PathLimit.model_construct(path_prefix=prefix, request_rate=1)],
        deny=[],
        allow=[],
    )
    with pytest.raises(ProtectionRenderError):
        map_files(smuggled)


def test_a_cidr_that_escaped_validation_is_still_refused() -> None:
    smuggled = ProtectionSettings.model_construct(deny=["10.0.0.0/8\nx"], allow=[], path_limits=[])
    with pytest.raises(ProtectionRenderError):
        map_files(smuggled)


# --- the frame -----------------------------------------------------------------------------


def test_the_frame_passes_haproxy_check_in_every_shape(workdir: Path) -> None:
    paths = haproxy_paths(workdir)
    write_maps(workdir, PROFILE)
    spec = http_lb()
    tcp = listener("TCP", protocol_port=81, default_pool_id=spec.pools[0].id)
    spec = spec.model_copy(update={"listeners": (*spec.listeners, tcp)})
    peers = PeersSpec(
        local_peer="a",
        peers=(
            PeerSpec(name="a", address="10.0.0.2", port=1024),
            PeerSpec(name="b", address="10.0.0.3", port=1024),
        ),
    )
    cfg = render_haproxy(spec, paths, peers=peers, protection=PROFILE)
    assert_valid(cfg, workdir)
    assert "stick-table type ip size 100k expire 60s store conn_cur" in cfg
    # Both tables are shared with the other instance of the pair.
    assert cfg.count(" peers openha_peers\n") == 2
    assert "timeout http-request 5000" in cfg
    assert cfg.count("timeout client 30000") == 2  # the listeners' 50000 capped
    # No threshold is written in the configuration: all come from the limits map.
    assert " 50\n" not in cfg and "gt 50" not in cfg
    # The frame's own proxies are named apart from listeners and pools (their ids).
    ids = {x.id for x in (*spec.listeners, *spec.pools)}
    proxies = re.findall(r"^(?:frontend|backend) (\S+)", cfg, re.M)
    assert all(p in ids or p.startswith(INTERNAL_PROXY_PREFIX) for p in proxies), proxies
    assert len(proxies) - len(ids) == 5
    p6 = pool(members=(member(address="2001:db8::10"),))
    v6 = loadbalancer((listener(default_pool_id=p6.id),), (p6,), vip=VIP6)
    cfg6 = render_haproxy(v6, paths, protection=PROFILE)
    assert "stick-table type ipv6" in cfg6
    assert_valid(cfg6, workdir)
    assert "openha_protect" not in render_haproxy(spec, paths)


def test_a_profile_needs_the_files_directory(workdir: Path) -> None:
    paths = haproxy_paths(workdir).model_copy(update={"files_dir": None})
    with pytest.raises(RenderError):
        render_haproxy(http_lb(), paths, protection=PROFILE)


def test_under_attack_changes_the_maps_not_the_configuration() -> None:
    """What makes under-attack mode a runtime change: the agent sees the same config
    (but its generation comment) and different map files."""
    attack = ProtectionSettings(request_rate=2, action="tarpit", deny=["203.0.113.0/24"])
    base = lb_spec(c.TOPOLOGY_SINGLE).model_copy(update={"protection": PROFILE})
    attacked = base.model_copy(update={"protection_runtime": attack, "generation": 8})
    only = placed(c.ROLE_STANDALONE, "198.51.100.20")
    before = instance_spec.build(base, only, [only], Settings())
    after = instance_spec.build(attacked, only, [only], Settings())
    assert runtime_changes(before.haproxy_config, after.haproxy_config) == []
    assert before.files[LIMITS_MAP] != after.files[LIMITS_MAP]
    assert after.files[DENY_MAP] == "203.0.113.0/24 1\n"
    plain = instance_spec.build(lb_spec(c.TOPOLOGY_SINGLE), only, [only], Settings())
    assert LIMITS_MAP not in plain.files


def test_chunks_stay_under_the_cli_buffer() -> None:
    content = "".join(f"10.{i // 256}.{i % 256}.0/24 1\n" for i in range(3000))
    parts = chunks(content, 8000)
    assert all(len(part) <= 8000 for part in parts)
    assert "".join(parts) == content


def test_parse_show_table() -> None:
    text = (
        "# table: openha_protect, type: ip, size:102400, used:2\n"
        "0x55bfd259bde8: key=127.0.0.1 use=0 exp=59960 gpc0=4 gpc0_rate(10000)=4 "
        "conn_rate(10000)=9 conn_cur=1 http_req_rate(10000)=9 http_err_rate(10000)=0\n"
        "0x55bfd259bdf0: key=10.0.0.9 use=0 exp=100 gpc0=0 gpc0_rate(10000)=0 "
        "conn_rate(10000)=1 conn_cur=0 http_req_rate(10000)=1 http_err_rate(10000)=0\n"
    )
    rows = parse_show_table(text)
    assert rows[0] == {
        "source": "127.0.0.1",
        "connections": 1,
        "connection_rate": 9,
        "request_rate": 9,
        "error_rate": 0,
        "limited_total": 4,
        "limited_rate": 4,
        "limited": True,
    }
    assert rows[1]["limited"] is False
    answer = top_talkers(lambda _cmd: text, 1)
    assert answer["tracked"] == 2 and [r["source"] for r in answer["sources"]] == ["127.0.0.1"]
    assert top_talkers(lambda _cmd: "No such table: openha_protect\n", 5)["protected"] is False


# --- a real HAProxy --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(cfg: str, workdir: Path, port: int) -> Iterator[int]:
    """HAProxy as a daemon on `cfg` (the agent's way); yields its pid."""
    if not Path(HAPROXY).exists():
        pytest.skip("haproxy is not installed")
    path = workdir / f"live-{uuid.uuid4()}.cfg"
    pid_file = workdir / "haproxy.pid"
    path.write_text(cfg)
    subprocess.run(
        [HAPROXY, "-D", "-p", str(pid_file), "-f", str(path)],
        check=True,
        timeout=20,
        env=SANDBOX_ENV,
    )
    pid = int(pid_file.read_text().split()[0])
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 15)


def get(
    port: int, path: str = "/", timeout: float = 5, source: str | None = None
) -> tuple[int, dict[str, str]]:
    """One request to the local listener, from `source` (a loopback address) if given:
    its status and headers (names in lower case)."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout, (source, 0) if source is not None else None
    )
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def test_real_haproxy_limits_and_takes_new_maps_without_a_reload(workdir: Path) -> None:
    """A PROMETHEUS listener answers by itself (no member needed): 5 requests per period
    pass, the 6th gets 429 with Retry-After; new maps through the runtime API lift the
    limit, deny the client at connection, then exempt it, all in the same process."""
    port = _free_port()
    spec = loadbalancer((listener("PROMETHEUS", protocol_port=port),), (), vip="127.0.0.1")
    strict = ProtectionSettings(request_rate=5, retry_after=7)
    write_maps(workdir, strict)
    paths = haproxy_paths(workdir)
    cfg = render_haproxy(spec, paths, protection=strict)
    run = lambda command: cli_command(Path(paths.stats_socket), command)  # noqa: E731
    with serving(cfg, workdir, port) as pid:
        # The readiness probe's empty connection counted as a request: start afresh.
        run("clear table openha_protect")
        codes = [get(port, "/metrics")[0] for _ in range(6)]
        assert codes == [200] * 5 + [429]
        status, headers = get(port, "/metrics")
        assert status == 429 and headers.get("retry-after") == "7"
        table = top_talkers(run, 5)
        assert table["sources"][0]["source"] == "127.0.0.1"
        assert table["sources"][0]["limited"] is True
        # The thresholds in force, read back from the process.
        assert table["limits"]["req_rate"] == 5 and table["limits"]["retry_after"] == 7
        assert table["limits"]["conn_cur"] == UNLIMITED
        # Every trip is counted for the instance's metrics, in the scrape's one round trip.
        instance = InstanceSpec(
            instance_id="i1",
            load_balancer_id="lb1",
            project_id="p1",
            generation=1,
            namespace="ohi-test",
            interfaces=(),
            vip_address="127.0.0.1",
            haproxy_config=cfg,
            files=map_files(strict),
        )
        families = {
            f.name: f
            for f in InstancesCollector(lambda: [(instance, Path(paths.stats_socket))]).collect()
        }
        samples = {
            s.labels["kind"]: s.value
            for s in families["openha_protection_limit_trips"].samples
            if s.name.endswith("_total")
        }
        assert samples == {"conn": 0, "req": 2, "hdr": 0}
        assert any(s.value == 1 for s in families["haproxy_up"].samples)

        def replace(settings: ProtectionSettings) -> None:
            load_maps(workdir, settings)

        replace(ProtectionSettings(request_rate=1000))
        assert limits_in_force(run)["req_rate"] == 1000
        assert get(port, "/metrics")[0] == 200
        replace(ProtectionSettings(request_rate=1000, deny=["127.0.0.0/8"]))
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
        # Allow-listed: never limited, even with a limit of one request.
        replace(ProtectionSettings(request_rate=1, allow=["127.0.0.1"]))
        assert [get(port, "/metrics")[0] for _ in range(5)] == [200] * 5
        # Thousands of entries go in a few payloads.
        many: list[Any] = [f"10.{i // 256}.{i % 256}.0/24" for i in range(3000)]
        replace(ProtectionSettings(request_rate=1, allow=["127.0.0.1"], deny=many))
        assert "entry_cnt=3000" in run("show map")
        assert get(port, "/metrics")[0] == 200
        # The same process served it all.
        assert int((workdir / "haproxy.pid").read_text().split()[0]) == pid
        os.kill(pid, 0)


def test_a_connection_already_open_sees_a_new_limit_at_once(workdir: Path) -> None:
    """The thresholds are process-wide variables the refresh re-reads: a kept-alive
    connection opened under a loose limit is held to a tight one from its next request
    (a flooder cannot keep the old limits by never reconnecting), and back."""
    port = _free_port()
    spec = loadbalancer((listener("PROMETHEUS", protocol_port=port),), (), vip="127.0.0.1")
    loose = ProtectionSettings(request_rate=1000)
    write_maps(workdir, loose)
    cfg = render_haproxy(spec, haproxy_paths(workdir), protection=loose)
    with serving(cfg, workdir, port) as pid:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:

            def status() -> int:
                conn.request("GET", "/metrics")
                resp = conn.getresponse()
                resp.read()
                return resp.status

            assert [status() for _ in range(5)] == [200] * 5
            load_maps(workdir, ProtectionSettings(request_rate=3))
            assert status() == 429  # the same connection: 6 requests, over 3
            load_maps(workdir, loose)
            assert status() == 200
        finally:
            conn.close()
        assert int((workdir / "haproxy.pid").read_text().split()[0]) == pid


def test_a_request_over_its_limit_gets_the_limits_answer_not_a_redirect_or_a_service(
    workdir: Path,
) -> None:
    """A request over a limit stops at the verdict and goes to the trip backend: an L7
    redirect (a `redirect` rule runs even after `http-request allow`) and a PROMETHEUS
    listener's own service do not answer it instead of the 429."""
    port, metrics_port = _free_port(), _free_port()
    moved = policy(
        "REDIRECT_TO_URL",
        rules=(rule(value="/old"),),
        redirect_url="http://a.example/new",
        redirect_http_code=301,
    )
    members = pool(members=(member(address="127.0.0.1", protocol_port=_free_port()),))
    web = listener(protocol_port=port, default_pool_id=members.id, l7policies=(moved,))
    stats = listener("PROMETHEUS", protocol_port=metrics_port)
    spec = loadbalancer((web, stats), (members,), vip="127.0.0.1")
    strict = ProtectionSettings(request_rate=3)
    write_maps(workdir, strict)
    cfg = render_haproxy(spec, haproxy_paths(workdir), protection=strict)
    assert "redirect location 'http://a.example/new' code 301 if " in cfg
    with serving(cfg, workdir, port):
        cli_command(Path(haproxy_paths(workdir).stats_socket), "clear table openha_protect")
        assert [get(port, "/old")[0] for _ in range(3)] == [301] * 3
        assert [get(port, "/old")[0], get(metrics_port, "/metrics")[0]] == [429, 429]


def test_a_flooder_waits_out_the_tarpit_for_its_429(workdir: Path) -> None:
    """With the 429 action, a source over its limit is told at once; one at
    FLOOD_FACTOR times its limit ignores Retry-After: its 429 comes after the tarpit,
    so a flooder cannot make HAProxy's thread build answers as fast as it asks."""
    port = _free_port()
    spec = loadbalancer((listener("PROMETHEUS", protocol_port=port),), (), vip="127.0.0.1")
    strict = ProtectionSettings(request_rate=2, retry_after=7)
    write_maps(workdir, strict)
    paths = haproxy_paths(workdir)
    cfg = render_haproxy(spec, paths, protection=strict)
    with serving(cfg, workdir, port):
        cli_command(Path(paths.stats_socket), "clear table openha_protect")
        codes = [get(port, "/metrics", timeout=1)[0] for _ in range(2 * FLOOD_FACTOR)]
        assert codes == [200] * 2 + [429] * (2 * FLOOD_FACTOR - 2)
        with pytest.raises((TimeoutError, urllib.error.URLError)):
            get(port, "/metrics", timeout=1)  # held
        started = time.monotonic()
        status, headers = get(port, "/metrics", timeout=TARPIT_TIMEOUT_MS / 1000 + 3)
        held = time.monotonic() - started
        assert status == 429 and headers.get("retry-after") == "7"
        assert TARPIT_TIMEOUT_MS / 1000 - 0.5 < held < TARPIT_TIMEOUT_MS / 1000 + 2.5, held


def _raw(port: int, head: bytes, timeout: float = 3) -> bytes:
    """What HAProxy answers `head` with (b"" if it closed without a word)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        try:
            return sock.recv(128)
        except ConnectionResetError:
            return b""


def test_header_guards_path_limits_and_reject_on_a_real_haproxy(workdir: Path) -> None:
    """The other verdicts of the frame, each once: too many header fields or bytes (431),
    a path's own limit (429 on that path only), and the reject action (reset)."""
    port = _free_port()
    spec = loadbalancer((listener("PROMETHEUS", protocol_port=port),), (), vip="127.0.0.1")
    settings = ProtectionSettings(
        request_rate=100,
        max_header_count=6,
        max_header_bytes=512,
        path_limits=[PathLimit(path_prefix="/login", request_rate=2)],
    )
    write_maps(workdir, settings)
    paths = haproxy_paths(workdir)
    cfg = render_haproxy(spec, paths, protection=settings)
    run = lambda command: cli_command(Path(paths.stats_socket), command)  # noqa: E731
    with serving(cfg, workdir, port):
        run("clear table openha_protect")
        fields = b"".join(b"X-%d: 1\r\n" % i for i in range(8))
        assert _raw(port, b"GET /metrics HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n").startswith(
            b"HTTP/1.1 431"
        )
        big = b"X-Big: " + b"a" * 600 + b"\r\n"
        assert _raw(port, b"GET /metrics HTTP/1.1\r\nHost: a\r\n" + big + b"\r\n").startswith(
            b"HTTP/1.1 431"
        )
        assert get(port, "/metrics")[0] == 200
        logins = [get(port, "/login")[0] for _ in range(3)]
        assert 429 not in logins[:2] and logins[2] == 429, logins
        assert get(port, "/metrics")[0] == 200  # the path's limit is the path's
        # A profile without header or path limits switches those checks off at run time.
        load_maps(workdir, ProtectionSettings(request_rate=100))
        run("clear table openha_protect")
        head = b"GET /metrics HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n"
        assert _raw(port, head).startswith(b"HTTP/1.1 200")
        assert 429 not in [get(port, "/login")[0] for _ in range(3)]
        load_maps(workdir, settings)
        assert _raw(port, head).startswith(b"HTTP/1.1 431")
        # The reject action: a source over its limit is reset, not answered.
        load_maps(workdir, ProtectionSettings(request_rate=1, action="reject"))
        run("clear table openha_protect")
        assert get(port, "/metrics")[0] == 200
        assert _raw(port, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n") == b""


ATTACKER = "127.0.0.2"  # any 127/8 address is the host's own


def test_counters_are_shared_by_a_pair_and_survive_a_reload(tmp_path: Path) -> None:
    """Two HAProxy processes of a pair, peers on localhost: what one counts, the other
    holds (a failover keeps an attacker's counters), and a reload of the first hands
    its table to the new process (so does a reload)."""
    if not Path(HAPROXY).exists():
        pytest.skip("haproxy is not installed")
    strict = ProtectionSettings(request_rate=5)
    peer_ports = (_free_port(), _free_port())
    peers = tuple(
        PeerSpec(name=name, address="127.0.0.1", port=port)
        for name, port in zip(("a", "b"), peer_ports, strict=True)
    )
    sides = {}
    for name in ("a", "b"):
        work = tmp_path / name
        (work / "files").mkdir(parents=True)
        (work / "server-state").write_text("1\n")
        write_maps(work, strict)
        port = _free_port()
        spec = loadbalancer((listener("PROMETHEUS", protocol_port=port),), (), vip="127.0.0.1")
        paths = haproxy_paths(work)
        cfg = render_haproxy(
            spec, paths, peers=PeersSpec(local_peer=name, peers=peers), protection=strict
        )
        sides[name] = (work, port, paths, cfg)

    def table(paths: HAProxyPaths) -> dict[str, Any]:
        rows = parse_show_table(cli_command(Path(paths.stats_socket), "show table openha_protect"))
        return {row["source"]: row for row in rows}

    work_a, port_a, paths_a, cfg_a = sides["a"]
    work_b, port_b, paths_b, cfg_b = sides["b"]

    def connected(paths: HAProxyPaths) -> bool:
        return "last_status=ESTA" in cli_command(Path(paths.stats_socket), "show peers")

    with serving(cfg_b, work_b, port_b), serving(cfg_a, work_a, port_a) as pid_a:
        # Until the peers have met, b may teach a its own (older) entry for the readiness
        # probe's source and so reset a's count mid-run: count from a settled, empty start.
        deadline = time.monotonic() + 10
        while not (connected(paths_a) and connected(paths_b)):
            if time.monotonic() > deadline:
                pytest.fail("the peers never connected")
            time.sleep(0.1)
        # From a source neither table has seen (the readiness probes came from
        # 127.0.0.1 to both): only a counts it, and b learns it from a alone.
        codes = [get(port_a, "/metrics", source=ATTACKER)[0] for _ in range(8)]
        # 5 pass and the rest are limited (a request at a period's edge may count once
        # more or less).
        passed = codes.count(200)
        assert passed in (4, 5) and codes == [200] * passed + [429] * (8 - passed), codes
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            seen = table(paths_b).get(ATTACKER)
            if seen and seen["request_rate"] >= 6 and seen["limited"]:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"the peer never got the counters: {table(paths_b)}")
        # A reload as the agent does it: a new process takes the sockets and the table.
        config = work_a / "live-reload.cfg"
        config.write_text(cfg_a)
        pid_file = work_a / "haproxy.pid"
        subprocess.run(
            [
                HAPROXY,
                "-D",
                "-p",
                str(pid_file),
                "-f",
                str(config),
                "-x",
                paths_a.stats_socket,
                "-sf",
                str(pid_a),
            ],
            check=True,
            timeout=20,
            env=SANDBOX_ENV,
        )
        new_pid = int(pid_file.read_text().split()[0])
        try:
            assert new_pid != pid_a
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError):
                    kept = table(paths_a).get(ATTACKER)
                    if kept and kept["request_rate"] >= 6:
                        break
                time.sleep(0.1)
            else:
                pytest.fail("the reloaded process lost the counters")
            # Still limited: the source is over its limit in the new process too.
            assert get(port_a, "/metrics", source=ATTACKER)[0] == 429
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(new_pid, 15)


def test_changed_map_files_go_to_the_runtime_api_not_a_reload() -> None:
    """A changed map file is no reason to reload (the certificates' runtime path leaves
    it alone), and only map files are replaced as maps."""
    changed = {"/x/files/protect-limits.map": "req_rate 5\n", "/x/files/notify.sh": "#!/bin/sh\n"}
    assert changed_maps(changed) == {"/x/files/protect-limits.map": "req_rate 5\n"}
    assert changed_maps(None) == {}
    assert tls_runtime_changes(changed) == []


def test_openha_top_renders_the_merged_answer() -> None:
    from rich.console import Console

    from openha.api.toptalkers import merge
    from openha.cli_protect import talkers_table

    a = {"sources": [{"source": "10.0.0.9", "request_rate": 50, "limited": True}]}
    b = {
        "sources": [
            {"source": "10.0.0.9", "request_rate": 70, "connections": 2},
            {"source": "10.0.0.1", "request_rate": 3},
        ]
    }
    rows = merge([a, b], 10)
    # A pair's two tables hold the same source: the larger counter, never the sum.
    assert [(r["source"], r["request_rate"], r["limited"]) for r in rows] == [
        ("10.0.0.9", 70, True),
        ("10.0.0.1", 3, False),
    ]
    answer = {
        "rate_period": 10,
        "sources": rows,
        "instances": [
            {
                "instance_id": "abcdef123",
                "protected": True,
                "tracked": 2,
                "limits": {"req_rate": 300, "conn_rate": UNLIMITED, "conn_cur": 20},
            }
        ],
        "errors": {"fedcba987": "agent unreachable"},
    }
    console = Console(record=True, width=120)
    console.print(talkers_table(answer, "web"))
    text = " ".join(console.export_text().split())  # the caption wraps at the table's width
    assert "10.0.0.9" in text and "yes" in text and "agent unreachable" in text
    assert "limits req 300 open 20" in text  # an unlimited one is not shown
