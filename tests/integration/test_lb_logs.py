"""Access logs through the whole system: real traffic, real HAProxy, the agent's rsyslogd.

One stack for the module (an API, a controller, one agent process with small log
quotas and S3 credentials), and per test a load balancer with the flavor it needs:
- a request's line is in the API within a second, with its fields; follow mode
  streams new lines; another project cannot read them;
- a syslog collector (a TCP receiver speaking RFC 6587 octet counting) goes away and
  comes back: every line sent meanwhile reaches it (spooled by rsyslogd);
- an S3 server (moto, started here) receives gzip'd JSON-lines objects under
  `project/lb/YYYY/MM/DD/HH/`, which decode to the lines sent;
- a load balancer sending far more than its quota keeps its files within it;
- rsyslogd stopped: lines that fit HAProxy's log ring all arrive once it runs again,
  and what overflows is announced, so that no line is lost without a count.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from lbhelpers import flavor, http_lb
from stack import PROJECT, Stack, free_port, wait_for
from typer.testing import CliRunner

from openha.cli import app
from openha.credentials import create_token
from openha.db import transaction
from openha.lab import BackendServer, ClientNamespace, Lab

pytestmark = pytest.mark.integration

LB_QUOTA = 4 << 20
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "openha-test",
    "AWS_SECRET_ACCESS_KEY": "openha-test",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[Stack, ClientNamespace, BackendServer]]:
    with Lab() as lab:
        stack = Stack(lab)
        try:
            stack.add_agent(
                env={
                    "OPENHA_LOG_LB_QUOTA_BYTES": str(LB_QUOTA),
                    "OPENHA_LOG_SEGMENT_BYTES": str(LB_QUOTA // 4),
                    **S3_ENV,
                }
            )
            yield stack, ClientNamespace(lab), BackendServer(lab, "web1")
        finally:
            # Controller first, as bench_stack does: an agent stopping under a running
            # controller is declared down and its LBs rescheduled during the teardown.
            stack.stop_controller.set()
            stack.close()


def get(client: ClientNamespace, url: str) -> int:
    return client.request(url, timeout=5).status


def logs(http: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    resp = http.get(path, params=params)
    assert resp.status_code == 200, resp.text
    assert resp.json()["unreachable_hosts"] == []
    return list(resp.json()["logs"])


def test_a_line_is_queryable_within_a_second_and_followed(
    world: tuple[Stack, ClientNamespace, BackendServer],
) -> None:
    stack, client, web = world
    made = http_lb(stack, [web], hm=False)
    lb = made["lb"]
    url = f"http://{lb['vip_address']}"
    tenant_path = f"/v2/lbaas/loadbalancers/{lb['id']}/logs"
    assert get(client, f"{url}/warm") == 200
    wait_for(lambda: logs(stack.tenant, tenant_path), 10, what="first line")

    assert get(client, f"{url}/one?x=%22q%22") == 200
    sent = time.monotonic()
    lines = wait_for(
        lambda: [r for r in logs(stack.tenant, tenant_path) if r["path"].startswith("/one")],
        5,
        0.05,
        what="the request's line",
    )
    seen = time.monotonic() - sent
    assert seen < 1.0, f"a line took {seen:.2f}s to reach the API"
    (line,) = lines
    assert line["path"] == "/one?x=%22q%22" and line["method"] == "GET"
    assert line["status"] == 200 and line["client"] == client.ip
    assert line["lb"] == lb["id"] and line["listener"] == made["listener"]["id"]
    assert line["pool"] == made["pool"]["id"] and line["member"] == made["members"][0]["id"]
    assert line["project"] == PROJECT and line["host"] == stack.agents[0].name
    for key in ("tq", "tw", "tc", "tr", "ta", "bytes_in", "bytes_out", "termination"):
        assert key in line
    assert len(line["request_id"]) > 10

    # The operator's route reads the same; another project is refused (Octavia's 403).
    admin_path = f"/v2/manage/loadbalancers/{lb['id']}/logs"
    assert logs(stack.admin, admin_path, limit=1) == logs(stack.tenant, tenant_path, limit=1)
    with transaction(stack.sessions) as s:
        other = create_token(s, "another-project", ["member"])
    with httpx.Client(base_url=stack.url, headers={"X-Auth-Token": other}) as stranger:
        assert stranger.get(tenant_path).status_code == 403
        assert stranger.get(admin_path).status_code == 403
    assert logs(stack.tenant, tenant_path, status="5xx") == []

    # Follow: the last line, then each new one as it is written.
    got: list[dict[str, Any]] = []
    with stack.tenant.stream(
        "GET", tenant_path, params={"follow": "true", "limit": 1, "follow_seconds": 15}
    ) as stream:
        assert stream.headers["content-type"].startswith("application/x-ndjson")
        lines_iter = stream.iter_lines()
        got.append(json.loads(next(lines_iter)))
        assert got[0]["path"].startswith("/one")
        for i in range(3):
            assert get(client, f"{url}/followed-{i}") == 200
        while len(got) < 4:
            got.append(json.loads(next(lines_iter)))
    assert [r["path"] for r in got[1:]] == [f"/followed-{i}" for i in range(3)]

    # The CLI reads the same, by name or id, rendered for people or as JSON.
    token = stack.tenant.headers["X-Auth-Token"]
    common = ["--api-url", stack.url, "--token", token, "--limit", "1", "--status", "2xx"]
    shown = CliRunner().invoke(app, ["logs", lb["id"], *common])
    assert shown.exit_code == 0, shown.output
    assert f"{client.ip}:" in shown.output and "GET /followed-2 200" in shown.output
    as_json = CliRunner().invoke(app, ["logs", lb["id"], "--json", *common])
    assert json.loads(as_json.output)["path"] == "/followed-2"


class Collector:
    """A syslog collector over TCP that reads RFC 6587 octet-counted frames."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.frames: list[str] = []
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(16)
        self._server = server
        thread = threading.Thread(target=self._accept, args=(server,), daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            self._conns.append(conn)
            thread = threading.Thread(target=self._read, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _read(self, conn: socket.socket) -> None:
        buf = b""
        while True:
            try:
                chunk = conn.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while b" " in buf:
                size, _, rest = buf.partition(b" ")
                if len(rest) < int(size):
                    break
                self.frames.append(rest[: int(size)].decode())
                buf = rest[int(size) :]

    def stop(self) -> None:
        """The collector goes away: it listens no more and its connections close."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in self._conns:
            conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self._conns.clear()

    def paths(self) -> list[str]:
        out = []
        for frame in self.frames:
            # <PRI>1 TIMESTAMP HOST APP-NAME PROCID MSGID SD MSG
            msg = frame.split(" ", 7)[7]
            if msg.startswith("{"):
                out.append(json.loads(msg)["path"])
        return out


def test_a_syslog_collector_that_goes_away_loses_nothing(
    world: tuple[Stack, ClientNamespace, BackendServer],
) -> None:
    stack, client, web = world
    collector = Collector(free_port())
    collector.start()
    try:
        target = {"type": "syslog", "host": "127.0.0.1", "port": collector.port}
        flavor_id = flavor(stack, "logs-syslog", {"log_targets": [target]})
        lb = http_lb(stack, [web], hm=False, lb={"flavor_id": flavor_id})["lb"]
        url = f"http://{lb['vip_address']}"
        for i in range(5):
            assert get(client, f"{url}/up-{i}") == 200
        wait_for(lambda: len(collector.paths()) >= 5, 10, what="lines at the collector")
        assert all(f.split(" ")[3] == f"lb-{lb['id']}" for f in collector.frames)  # APP-NAME

        collector.stop()
        for i in range(100):
            assert get(client, f"{url}/away-{i}") == 200
        time.sleep(1.5)  # rsyslogd notices, suspends the action, spools what comes
        collector.start()
        wanted = [f"/away-{i}" for i in range(100)]
        wait_for(
            lambda: set(wanted) <= set(collector.paths()), 30, what="the spooled lines arriving"
        )
        assert [p for p in collector.paths() if p.startswith("/away-")][:100] == wanted

        def delivery() -> dict[str, Any]:
            host = stack.admin.get(f"/v2/manage/hosts/{stack.agents[0].host_id}").json()["host"]
            return dict(host["log_delivery"] or {})

        def mine() -> dict[str, Any]:
            found = [t for t in delivery().get("syslog", []) if t["port"] == collector.port]
            return found[0] if found and found[0]["delivered"] >= 105 else {}

        # rsyslogd's own counters (impstats), through a heartbeat, in the host's view.
        state = wait_for(mine, 20, 0.5, what="delivery state counting the lines")
        assert state["dropped"] == 0 and state["host"] == "127.0.0.1"
        assert delivery()["rsyslogd_running"] is True
    finally:
        collector.stop()


def test_s3_objects_hold_the_lines_of_each_interval(
    world: tuple[Stack, ClientNamespace, BackendServer],
) -> None:
    import boto3
    from moto.server import ThreadedMotoServer

    stack, client, web = world
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
        )
        s3.create_bucket(Bucket="openha-logs")
        target = {"type": "s3", "endpoint": endpoint, "bucket": "openha-logs", "interval": 1}
        flavor_id = flavor(stack, "logs-s3", {"log_targets": [target]})
        lb = http_lb(stack, [web], hm=False, lb={"flavor_id": flavor_id})["lb"]
        url = f"http://{lb['vip_address']}"
        started = datetime.now(UTC)
        for i in range(30):
            assert get(client, f"{url}/s3-{i}") == 200

        def shipped() -> list[str]:
            found = s3.list_objects_v2(Bucket="openha-logs", Prefix=f"{PROJECT}/{lb['id']}/")
            paths = []
            for obj in found.get("Contents", []):
                body = s3.get_object(Bucket="openha-logs", Key=obj["Key"])["Body"].read()
                paths += [json.loads(x)["path"] for x in gzip.decompress(body).splitlines()
                          if b'"kind":"access"' in x]  # fmt: skip
            return paths if {f"/s3-{i}" for i in range(30)} <= set(paths) else []

        paths = wait_for(shipped, 20, 0.5, what="objects in the bucket")
        assert sorted(p for p in paths if p.startswith("/s3-")) == sorted(
            f"/s3-{i}" for i in range(30)
        )
        keys = [
            o["Key"]
            for o in s3.list_objects_v2(Bucket="openha-logs", Prefix=f"{PROJECT}/")["Contents"]
        ]
        hour = f"{started:%Y/%m/%d/%H}"
        assert any(k.startswith(f"{PROJECT}/{lb['id']}/{hour}/") for k in keys), keys
        assert all(k.endswith(".jsonl.gz") for k in keys)
    finally:
        server.stop()


def test_rotation_keeps_a_busy_load_balancer_within_its_quota(
    world: tuple[Stack, ClientNamespace, BackendServer],
) -> None:
    stack, client, web = world
    lb = http_lb(stack, [web], hm=False)["lb"]
    lb_dir = stack.agents[0].dir / "logs" / lb["id"]
    # wrk until well over the quota has been logged (a busy machine serves fewer per second).
    wrk = ["ip", "netns", "exec", client.namespace, "wrk", "-t1", "-c4", "-d3s"]
    sent = 0
    for _ in range(10):
        out = subprocess.run(
            [*wrk, f"http://{lb['vip_address']}/busy"],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        sent += int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
        if sent * 400 > 2 * LB_QUOTA:
            break
    assert sent * 400 > 2 * LB_QUOTA, f"only {sent} requests: not enough to overflow the quota"

    def disk() -> int:
        return sum(p.stat().st_size for p in lb_dir.iterdir() if p.is_file())

    # The janitor enforces the quota on its passes (every 0.5-1 s): bounded once it has
    # looked, whatever the machine's pace.
    wait_for(lambda: disk() <= LB_QUOTA, timeout=10, what=f"disk within the {LB_QUOTA}-byte quota")
    newest = logs(stack.tenant, f"/v2/lbaas/loadbalancers/{lb['id']}/logs", limit=5)
    assert [r["path"] for r in newest] == ["/busy"] * 5


def burst(client: ClientNamespace, url: str, name: str, count: int) -> int:
    """`count` requests `<url>/<name>/<n>` (n = 1..count), 8 at a time; how many got a 200."""
    out = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            client.namespace,
            "curl",
            "-s",
            "--parallel",
            "--parallel-max",
            "8",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}\\n",
            f"{url}/{name}/[1-{count}]",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return out.split().count("200")


def filed(lb_dir: Path, kind: str = "access") -> list[dict[str, Any]]:
    """Every whole line rsyslogd filed for the LB, closed segments included."""
    lines = []
    for path in sorted(lb_dir.glob(f"{kind}*.log")):
        text = path.read_text()
        # rsyslogd writes a large batch in several writes: leave a partial last line.
        lines += [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]
    return lines


def numbers(lines: list[dict[str, Any]], name: str) -> list[int]:
    prefix = f"/{name}/"
    return sorted(int(r["path"][len(prefix) :]) for r in lines if r["path"].startswith(prefix))


def announced_drops(lb_dir: Path) -> int:
    """Lines HAProxy said it could not keep: "N events dropped", filed as admin lines."""
    found = (re.fullmatch(r"(\d+) events? dropped", r["message"]) for r in filed(lb_dir, "admin"))
    return sum(int(m.group(1)) for m in found if m)


def test_a_stalled_rsyslogd_loses_no_line_that_fits_the_ring_and_counts_the_rest(
    world: tuple[Stack, ClientNamespace, BackendServer],
) -> None:
    """rsyslogd stopped (a host too busy to run it): lines wait in HAProxy's log ring.

    1,200 lines (~0.7 MB) fit the default 1 MiB ring and must all arrive once rsyslogd
    runs again. 3,000 more overflow it: HAProxy drops what does not fit, and says how
    many in an admin line, so that filed + announced accounts for every request.
    """
    stack, client, web = world
    lb = http_lb(stack, [web], hm=False)["lb"]
    url = f"http://{lb['vip_address']}"
    lb_dir = stack.agents[0].dir / "logs" / lb["id"]
    assert get(client, f"{url}/warm") == 200
    wait_for(lambda: lb_dir.joinpath("access.log").exists(), 10, what="the first line")
    pid = int((stack.agents[0].dir / "syslog" / "rsyslogd.pid").read_text().split()[0])
    os.kill(pid, signal.SIGSTOP)
    try:
        assert burst(client, url, "fits", 1200) == 1200
        assert burst(client, url, "overflows", 3000) == 3000
        assert filed(lb_dir) and numbers(filed(lb_dir), "fits") == []  # nothing got through
    finally:
        os.kill(pid, signal.SIGCONT)
    # The announcement goes into the ring before the next line once there is room: keep
    # sending until it is there (each request before that is dropped and counted too).
    after = 0

    def announced() -> int:
        nonlocal after
        after += 1
        assert get(client, f"{url}/after/{after}") == 200
        return announced_drops(lb_dir)

    wait_for(announced, 20, 0.2, what="HAProxy announcing the lines it dropped")
    lines = wait_for(
        lambda: (got := filed(lb_dir)) and after in numbers(got, "after") and got,
        10,
        what="the last line",
    )
    dropped = announced_drops(lb_dir)
    assert numbers(lines, "fits") == list(range(1, 1201)), "a line that fit the ring was lost"
    kept = len(numbers(lines, "overflows")) + len(numbers(lines, "after"))
    assert dropped > 0, "3,000 lines should overflow the ring: the test proves nothing"
    assert kept + dropped == 3000 + after, (kept, dropped, after)
