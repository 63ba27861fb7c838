"""Per-LB log files on a host: segments, quotas, retention, queries and follow cursors.

Real files in a temporary directory, written as rsyslogd writes them (appended JSON
lines, renamed under it on rotation); no rsyslogd needed here.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from openha.agent.logpipe import LogPipeline
from openha.agent.logstore import LogQuery, LogStore
from openha.agent.paths import namespace_name
from openha.domain.logtargets import InvalidLogTargets, parse_targets
from openha.domain.spec import InstanceSpec
from openha.render.rsyslog import (
    Forward,
    RsyslogLayout,
    RsyslogRenderError,
    inputs_table,
    lookup_table,
    render_rsyslog,
)
from openha.settings import Settings


def store(tmp_path: Path, **kw: int | float) -> LogStore:
    settings: dict = dict(lb_quota=1 << 20, host_quota=1 << 30, segment_bytes=1 << 20)
    settings.update(kw)
    return LogStore(tmp_path, retention=settings.pop("retention", 3600), **settings)


def line(i: int, status: int = 200, client: str = "10.0.0.7", ts: float | None = None) -> bytes:
    record = {"ts": ts if ts is not None else 1000.0 + i, "kind": "access", "path": f"/{i}",
              "status": status, "client": client}  # fmt: skip
    return json.dumps(record).encode() + b"\n"


def write(s: LogStore, lb: str, data: bytes, kind: str = "access") -> None:
    d = s.lb_dir(lb)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / f"{kind}.log", "ab") as fh:  # as rsyslogd appends
        fh.write(data)


def test_tail_filters_and_reads_across_segments(tmp_path: Path) -> None:
    s, lb = store(tmp_path, segment_bytes=4096), str(uuid.uuid4())
    s.register(lb, "p1", "i1", [])
    for i in range(300):
        write(s, lb, line(i, status=503 if i % 10 == 0 else 200, client=f"10.0.{i % 2}.1"))
        if i % 50 == 49:
            assert s.rotate()  # past the segment size
    assert len(s.segments(lb)) >= 5
    write(s, lb, b'{"ts": 2000, "cut sh')  # a line still being written: not yet a line
    last = s.tail(lb, LogQuery(limit=3))
    assert [r["path"] for r in last] == ["/297", "/298", "/299"]
    errors = s.tail(lb, LogQuery(status="5xx", limit=1000))
    assert [r["path"] for r in errors] == [f"/{i}" for i in range(0, 300, 10)]
    assert len(s.tail(lb, LogQuery(status="503", client="10.0.0.0/24", limit=1000))) == 30
    odd = s.tail(lb, LogQuery(client="10.0.1.1", since=1290, until=1295))
    assert [r["path"] for r in odd] == ["/291", "/293", "/295"]
    window = s.tail(lb, LogQuery(since=1290, until=1295, limit=100))
    assert [r["path"] for r in window] == [f"/{i}" for i in range(290, 296)]
    for bad in ({"kind": "debug"}, {"status": "5x"}, {"client": "a.b"}, {"limit": 0}):
        with pytest.raises(ValueError):
            LogQuery(**bad)  # type: ignore[arg-type]


def test_a_cursor_follows_a_file_through_its_rotation(tmp_path: Path) -> None:
    s, lb = store(tmp_path, segment_bytes=4096), str(uuid.uuid4())
    write(s, lb, line(1))
    cursor = s.cursor_end(lb, "access")
    write(s, lb, line(2) + line(3)[:10])  # the third is half written
    records, cursor = s.after(lb, LogQuery(), cursor)
    assert [r["path"] for r in records] == ["/2"]
    write(s, lb, line(3)[10:])
    os.rename(s.lb_dir(lb) / "access.log", s.lb_dir(lb) / f"access.{time.time_ns():020d}.log")
    write(s, lb, line(4))  # rsyslogd, after its SIGHUP, writes a new file
    records, cursor = s.after(lb, LogQuery(), cursor)
    assert [r["path"] for r in records] == ["/3", "/4"]
    assert s.after(lb, LogQuery(), cursor)[0] == []
    with pytest.raises(ValueError):
        s.after(lb, LogQuery(), "nonsense")


def test_rotation_keeps_disk_within_the_quotas(tmp_path: Path) -> None:
    s = store(tmp_path, lb_quota=64 * 1024, host_quota=100 * 1024, segment_bytes=8192)
    lbs = [str(uuid.uuid4()) for _ in range(2)]
    for lb in lbs:
        s.register(lb, "p", "i-" + lb, [])
    for round_ in range(60):
        for lb in lbs:
            write(s, lb, b"".join(line(round_ * 100 + i) for i in range(40)))  # ~3 KB
        s.rotate()
        s.enforce()
        for lb in lbs:
            assert s.disk_bytes(lb) <= 64 * 1024 + 16 * 1024  # a quota plus one pass' growth
        assert s.disk_bytes() <= 100 * 1024 + 2 * 16 * 1024
    # What remains is the newest: the last line of each LB is still there.
    for lb in lbs:
        assert s.tail(lb, LogQuery(limit=1))[0]["path"] == "/5939"


def test_a_current_file_grown_past_the_quota_after_the_last_scan_is_enforced(
    tmp_path: Path,
) -> None:
    # The directory does not change while the current file grows, so the janitor's
    # remembered size of the closed segments is still good; the total is not.
    # (Segments are cut at 15 KiB: a quarter of the quota.)
    s, lb = store(tmp_path, lb_quota=60 * 1024, segment_bytes=16 * 1024), str(uuid.uuid4())
    s.register(lb, "p", "i", [])
    for _ in range(4):
        write(s, lb, b"x" * 16 * 1024 + b"\n")
        s.rotate()
    write(s, lb, b"x" * 7 * 1024 + b"\n")
    s.enforce()
    assert s.disk_bytes(lb) <= 60 * 1024
    write(s, lb, b"x" * 6 * 1024 + b"\n")  # still below the segment size: no rotation
    assert not s.rotate()
    assert s.disk_bytes(lb) > 60 * 1024
    s.enforce()
    assert s.disk_bytes(lb) <= 60 * 1024


def test_a_gone_load_balancers_files_are_kept_for_the_retention(tmp_path: Path) -> None:
    s, lb = store(tmp_path, retention=0.3), str(uuid.uuid4())
    s.register(lb, "p", "i1", [])
    s.register(lb, "p", "i2", [])
    write(s, lb, line(1))
    s.release(lb, "i1")
    s.enforce()
    assert s.meta(lb).gone_at is None  # type: ignore[union-attr]
    s.release(lb, "i2")
    s.enforce()
    assert s.lb_dir(lb).exists()
    time.sleep(0.35)
    s.enforce()
    assert not s.lb_dir(lb).exists()
    with pytest.raises(ValueError):
        s.lb_dir("../../etc")


@pytest.mark.parametrize(
    "targets",
    [
        "not a list",
        [{"type": "syslog", "host": 'evil" action(type="omfile")'}],
        [{"type": "syslog", "host": "a.example.com\n"}],
        [{"type": "syslog", "host": "a.example.com", "port": 0}],
        [{"type": "syslog", "host": "a.example.com", "template": "x"}],
        [{"type": "s3", "endpoint": "https://s3.example.com/path", "bucket": "b1b"}],
        [{"type": "s3", "endpoint": "https://user@s3.example.com", "bucket": "b1b"}],
        [{"type": "s3", "endpoint": "file:///etc", "bucket": "b1b"}],
        [{"type": "s3", "endpoint": "https://s3.example.com", "bucket": "../x"}],
        [{"type": "s3", "endpoint": "https://s3.example.com", "bucket": "192.168.1.1"}],
        [{"type": "s3", "endpoint": "https://s3.example.com", "bucket": "Bucket"}],
        [{"type": "kafka"}],
        [{"type": "syslog", "host": f"h{i}.example.com"} for i in range(5)],
    ],
)
def test_log_targets_are_refused_unless_strictly_valid(targets: object) -> None:
    with pytest.raises(InvalidLogTargets):
        parse_targets(targets)


def test_rsyslog_config_holds_only_checked_values(tmp_path: Path) -> None:
    (t,) = parse_targets([{"type": "syslog", "host": "LOG.example.com", "protocol": "tls"}])
    names = ("s", "w", "l", "st", "lk", "o", "in", "ij")
    layout = RsyslogLayout(*(str(tmp_path / n) for n in names))
    text = render_rsyslog(layout, [Forward(t, 1 << 20, "/etc/ssl/certs/ca.pem")])
    assert 'target="log.example.com"' in text and 'StreamDriver="ossl"' in text
    assert f'if $.oh_t contains ",{t.id}," then' in text
    bad = RsyslogLayout(*(str(tmp_path / n) for n in ('s"', "w", "l", "st", "lk", "o", "in", "ij")))
    with pytest.raises(RsyslogRenderError):
        render_rsyslog(bad, [])


def test_rsyslogd_accepts_the_rendered_configuration(tmp_path: Path) -> None:
    if not Path("/usr/sbin/rsyslogd").exists():
        pytest.skip("rsyslog is not installed")
    targets = parse_targets(
        [
            {"type": "syslog", "host": "127.0.0.1", "port": 5514},
            {"type": "syslog", "host": "logs.example.com", "port": 6514, "protocol": "tls"},
        ]
    )
    names = ("in.sock", "w", "l", "s", "lk", "o", "in", "ij")
    layout = RsyslogLayout(*(str(tmp_path / n) for n in names))
    (tmp_path / "w").mkdir()
    (tmp_path / "in").mkdir()
    (tmp_path / "lk").write_text(lookup_table({str(uuid.uuid4()): [targets[0].id]}))
    (tmp_path / "ij").write_text(inputs_table({0: str(uuid.uuid4())}))
    conf = tmp_path / "rsyslog.conf"
    conf.write_text(
        render_rsyslog(layout, [Forward(t, 1 << 20, "/etc/ssl/certs/x.pem") for t in targets])
    )
    result = subprocess.run(
        ["/usr/sbin/rsyslogd", "-N1", "-f", str(conf)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr


def test_shipping_looks_only_at_load_balancers_with_an_object_store(tmp_path: Path) -> None:
    s3 = [{"type": "s3", "endpoint": "https://s3.example.com", "bucket": "b1b", "interval": 60}]
    s, shipped, plain = store(tmp_path), str(uuid.uuid4()), str(uuid.uuid4())
    s.register(plain, "p1", "i1", [])
    s.register(shipped, "p1", "i2", s3)
    assert s.shipped_ids() == [shipped]
    again = store(tmp_path)  # an agent started again: records read from lb.json
    assert again.shipped_ids() == [shipped]
    again.register(shipped, "p1", "i2", [])  # its flavor dropped the store
    again.register(plain, "p1", "i1", s3)
    assert again.shipped_ids() == [plain]


def test_each_instance_gets_an_input_of_its_own_kept_across_restarts(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, agent_dir=tmp_path / "agent")
    pipeline = LogPipeline(settings, tmp_path / "agent")  # not started: no rsyslogd

    def spec(lb_id: str) -> InstanceSpec:
        instance_id = str(uuid.uuid4())
        return InstanceSpec(
            instance_id=instance_id,
            load_balancer_id=lb_id,
            project_id="p",
            generation=1,
            namespace=namespace_name(instance_id),
            interfaces=(),
            vip_address="192.0.2.1",
            haproxy_config="",
        )

    lb_a, lb_b = str(uuid.uuid4()), str(uuid.uuid4())
    a, a2, b = spec(lb_a), spec(lb_a), spec(lb_b)
    for s in (a, a2, b):
        pipeline.register(s)
    pipeline.register(a)  # again (an adoption): the same input
    sockets = [pipeline.input_socket(s.instance_id) for s in (a, a2, b)]
    assert len(set(sockets)) == 3 and None not in sockets
    assert pipeline.input_socket(str(uuid.uuid4())) is None
    # What rsyslogd files by: each input's LB, two instances of one LB included.
    table = json.loads(inputs_table({slot: lb for slot, lb in pipeline.slots.values()}))
    assert sorted(e["value"] for e in table["table"]) == sorted([lb_a, lb_a, lb_b])
    # A released input is free for the next instance; a new agent finds the same inputs.
    pipeline.release(lb_a, a2.instance_id)
    c = spec(lb_b)
    pipeline.register(c)
    assert pipeline.input_socket(c.instance_id) == sockets[1]
    again = LogPipeline(settings, tmp_path / "agent")
    assert again.slots == pipeline.slots
    again.keep_only({a.instance_id})
    assert list(again.slots) == [a.instance_id]
    with pytest.raises(RsyslogRenderError):
        inputs_table({0: "../../etc"})
