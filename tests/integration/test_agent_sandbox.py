"""Agent integration: every instance's data plane in its sandbox, checked from /proc.

Real HAProxy processes in real namespaces: their uid, gid, root directory and
capabilities as the kernel reports them, their cgroup and its limits as the cgroupfs
holds them, across reloads, an agent restart and `purge`. Traffic and logs must keep
flowing through all of it.
"""

from __future__ import annotations

import os
import pwd
import socket
import stat
import subprocess
import uuid
from pathlib import Path

import pytest
from agent_support import AgentHarness, LBConfig, Member, wait_for

from openha.agent import cgroups
from openha.agent.haproxy import HAProxyInstance
from openha.agent.paths import instance_paths, log_paths, namespace_name
from openha.agent.procs import confinement, pid_from_file
from openha.agent.purge import purge
from openha.agent.sandbox import KEEPALIVED_CAPS, RECORD
from openha.domain.spec import ResourceSpec
from openha.lab import ClientNamespace, Lab
from openha.providers.haproxy.instance_spec import NOTIFY_SCRIPT
from openha.render.keepalived import SCRIPT_USER, VrrpSpec, render_keepalived, render_notify_script

pytestmark = pytest.mark.integration

HIERARCHY = cgroups.detect()


def haproxy_of(agent_dir: Path, lb: LBConfig) -> HAProxyInstance:
    return HAProxyInstance(
        instance_paths(agent_dir, lb.instance_id), namespace_name(lb.instance_id)
    )


def group_of(agent: AgentHarness, lb: LBConfig) -> cgroups.InstanceCgroup:
    assert agent.service is not None
    sources = agent.service.sandbox_sources()
    return next(s.cgroup for spec, s in sources if spec.instance_id == lb.instance_id)


def assert_confined(pid: int, agent_dir: Path, lb: LBConfig) -> dict[str, object]:
    facts = confinement(pid)
    assert facts is not None, f"process {pid} is gone"
    paths = instance_paths(agent_dir, lb.instance_id)
    assert facts["uid"] != 0 and facts["gid"] == facts["uid"], facts
    assert facts["root"] == str(paths.chroot_dir), facts
    assert int(str(facts["cap_eff"]), 16) == 0, facts  # no capability left at all
    return facts


def v1_limits(group: cgroups.InstanceCgroup) -> dict[str, str]:
    def read(controller: str, name: str) -> str:
        return (group.dirs[controller] / name).read_text().strip()

    return {
        "shares": read("cpu", "cpu.shares"),
        "period": read("cpu", "cpu.cfs_period_us"),
        "quota": read("cpu", "cpu.cfs_quota_us"),
        "memory": read("memory", "memory.limit_in_bytes"),
        "pids": read("pids", "pids.max"),
    }


@pytest.mark.skipif(HIERARCHY.mode == "none", reason="no cgroup hierarchy on this host")
def test_haproxy_runs_unprivileged_chrooted_and_walled_in(
    lab: Lab, agent: AgentHarness, client: ClientNamespace, lb: LBConfig
) -> None:
    resources = ResourceSpec(cpu_weight=50, cpu_max=0.5, memory_max_mb=256, pids_max=64)
    resp = agent.put(lb.spec(lab, agent.agent_dir, 1, resources=resources))
    assert resp.status_code == 200, resp.text
    assert resp.json()["sandbox_error"] is None
    proc = haproxy_of(agent.agent_dir, lb)
    pid = proc.pid()
    assert pid is not None
    facts = assert_confined(pid, agent.agent_dir, lb)
    group = group_of(agent, lb)
    assert group.holds(pid) and pid in group.pids()
    if HIERARCHY.mode == "v1":
        assert v1_limits(group) == {
            "shares": "512",
            "period": "20000",
            "quota": "10000",
            "memory": str(256 << 20),
            "pids": "64",
        }
    else:
        unified = group.dirs["unified"]
        assert (unified / "cpu.weight").read_text().strip() == "50"
        assert (unified / "memory.max").read_text().strip() == str(256 << 20)

    # Traffic, and its access log through the chroot's link to rsyslogd.
    assert client.request(f"http://{lb.vip}/before").status == 200
    url = f"/v1/loadbalancers/{lb.lb_id}/logs"

    def logged(path: str) -> bool:
        records = agent.api.get(url, params={"limit": 50}).json()["records"]
        return any(r["path"] == path for r in records)

    wait_for(lambda: logged("/before"), timeout=5)

    # A reload (new config): the successor is confined the same way, in the same group,
    # and the log keeps flowing; the flavor's new limits are written.
    lb.extra_frontend = ["http-response set-header X-Gen 2"]
    bigger = ResourceSpec(cpu_weight=200, memory_max_mb=512, pids_max=128)
    resp = agent.put(lb.spec(lab, agent.agent_dir, 2, resources=bigger))
    assert resp.status_code == 200, resp.text
    new_pid = proc.pid()
    assert new_pid is not None and new_pid != pid
    assert assert_confined(new_pid, agent.agent_dir, lb)["uid"] == facts["uid"]
    assert group.holds(new_pid)
    if HIERARCHY.mode == "v1":
        assert v1_limits(group) == {
            "shares": "2048",
            "period": "20000",
            "quota": "-1",
            "memory": str(512 << 20),
            "pids": "128",
        }
    assert client.request(f"http://{lb.vip}/after").headers["x-gen"] == "2"
    wait_for(lambda: logged("/after"), timeout=5)

    diag = agent.api.get(f"/v1/instances/{lb.instance_id}/diagnostics").json()
    sandbox = diag["sandbox"]
    assert sandbox["uid"] == facts["uid"] and sandbox["cgroup_mode"] == HIERARCHY.mode
    assert sandbox["limits"]["memory_max_mb"] == 512
    assert sandbox["usage"]["memory_bytes"] > 0 and sandbox["usage"]["pids"] >= 1
    assert sandbox["processes"][str(new_pid)]["root"] == str(instance_paths(
        agent.agent_dir, lb.instance_id).chroot_dir)  # fmt: skip
    metrics = agent.api.get("/metrics").text
    limit = [
        line
        for line in metrics.splitlines()
        if line.startswith("openha_instance_memory_limit_bytes{")
        and f'loadbalancer_id="{lb.lb_id}"' in line
        and f'project_id="{lb.project_id}"' in line
    ]
    assert len(limit) == 1 and float(limit[0].rsplit(" ", 1)[1]) == 512 << 20, metrics

    # The files: the instance directory is traversable, not listable; its own files
    # are root's alone; the chroot is empty but for its two sockets.
    paths = instance_paths(agent.agent_dir, lb.instance_id)
    assert stat.S_IMODE(paths.instance_dir.stat().st_mode) == 0o711
    assert stat.S_IMODE(paths.config.stat().st_mode) == 0o600
    assert stat.S_IMODE((paths.instance_dir / RECORD).stat().st_mode) == 0o600
    assert sorted(os.listdir(paths.chroot_dir)) == ["log.sock", "syslog.sock"]
    assert paths.log_socket.stat().st_uid == facts["uid"]

    # Admin events still reach the agent through the chroot: a member going down.
    assert agent.service is not None
    agent.service.logs.take_state_changes()
    lb.check = True
    lb.members.append(Member(str(uuid.uuid4()), f"{lab.allocate_ip()}:80"))  # nobody answers
    resp = agent.put(lb.spec(lab, agent.agent_dir, 3, resources=bigger))
    assert resp.status_code == 200, resp.text
    wait_for(lambda: lb.instance_id in agent.service.logs.take_state_changes(), timeout=10)  # type: ignore[union-attr]


def test_instances_get_distinct_uids_and_survive_an_agent_restart(
    lab: Lab, agent: AgentHarness, client: ClientNamespace, lb: LBConfig
) -> None:
    other = lb.another(lab)
    assert agent.put(lb.spec(lab, agent.agent_dir, 1)).status_code == 200
    assert agent.put(other.spec(lab, agent.agent_dir, 1)).status_code == 200
    pids = [haproxy_of(agent.agent_dir, x).pid() for x in (lb, other)]
    assert None not in pids
    uids = [
        assert_confined(p, agent.agent_dir, x)["uid"]
        for p, x in zip(pids, (lb, other), strict=True)
        if p is not None
    ]
    assert uids[0] != uids[1]  # one cannot signal the other
    group = group_of(agent, lb)
    agent.restart()
    # Adopted, not restarted: the same process, still in its group, no sandbox error.
    status = agent.status(lb.instance_id)
    assert status["haproxy_pid"] == pids[0] and status["sandbox_error"] is None
    assert group.holds(pids[0])  # type: ignore[arg-type]
    assert group_of(agent, lb).dirs == group.dirs
    assert client.request(f"http://{lb.vip}/").status == 200
    # A reload after adoption lands in the same group with the same uid.
    lb.extra_frontend = ["http-response set-header X-Gen 2"]
    assert agent.put(lb.spec(lab, agent.agent_dir, 2)).status_code == 200
    new_pid = haproxy_of(agent.agent_dir, lb).pid()
    assert new_pid is not None and group.holds(new_pid)
    assert assert_confined(new_pid, agent.agent_dir, lb)["uid"] == uids[0]


@pytest.mark.skipif(HIERARCHY.mode != "v1", reason="v1's quota hierarchy check")
def test_a_limit_that_cannot_be_applied_is_reported(
    lab: Lab, agent: AgentHarness, client: ClientNamespace, lb: LBConfig
) -> None:
    """A CPU quota above the parent's (v1 refuses it): the instance serves, and says so."""
    assert agent.put(lb.spec(lab, agent.agent_dir, 1)).status_code == 200
    group = group_of(agent, lb)
    agent_level = group.dirs["cpu"].parent
    (agent_level / "cpu.cfs_quota_us").write_text("20000")  # 0.2 cores for the whole agent
    try:
        lb.extra_frontend = ["http-response set-header X-Gen 2"]
        resp = agent.put(lb.spec(lab, agent.agent_dir, 2, resources=ResourceSpec(cpu_max=1.0)))
        assert resp.status_code == 200, resp.text
        error = resp.json()["sandbox_error"]
        assert error and "cpu quota" in error, resp.json()
        assert client.request(f"http://{lb.vip}/").headers["x-gen"] == "2"
        diag = agent.api.get(f"/v1/instances/{lb.instance_id}/diagnostics").json()
        assert any("cpu quota" in p for p in diag["sandbox"]["problems"])
        assert "openha_instance_sandbox_degraded{" in agent.api.get("/metrics").text
    finally:
        (agent_level / "cpu.cfs_quota_us").write_text("-1")
    # Once the parent allows it, the next apply clears the report.
    lb.extra_frontend = ["http-response set-header X-Gen 3"]
    resp = agent.put(lb.spec(lab, agent.agent_dir, 3, resources=ResourceSpec(cpu_max=1.0)))
    assert resp.json()["sandbox_error"] is None


@pytest.mark.skipif(HIERARCHY.mode == "none", reason="no cgroup hierarchy on this host")
def test_delete_and_purge_leave_no_cgroup_and_no_uid_behind(
    lab: Lab, agent: AgentHarness, lb: LBConfig
) -> None:
    other = lb.another(lab)
    registry = agent.settings().sandbox_uid_registry
    assert agent.put(lb.spec(lab, agent.agent_dir, 1)).status_code == 200
    assert agent.put(other.spec(lab, agent.agent_dir, 1)).status_code == 200
    groups = [group_of(agent, x) for x in (lb, other)]
    sandboxes = {spec.instance_id: s for spec, s in agent.service.sandbox_sources()}  # type: ignore[union-attr]
    uids = [sandboxes[x.instance_id].uid for x in (lb, other)]
    assert all(g.exists() for g in groups)
    assert all((registry / str(u)).exists() for u in uids)
    # Delete through the agent: its group and uid go with it.
    assert agent.api.delete(f"/v1/instances/{lb.instance_id}").status_code in (200, 204)
    assert not any(p.exists() for p in groups[0].dirs.values())
    assert not (registry / str(uids[0])).exists()
    # Purge with the agent stopped (as `openha purge` runs): the rest goes too.
    agent.stop()
    purge(agent.agent_dir)
    assert not any(p.exists() for p in groups[1].dirs.values())
    assert not any(p.parent.exists() for p in groups[1].dirs.values())  # the agent's level
    assert not (registry / str(uids[1])).exists()


def agent_group_dirs(agent_dir: Path) -> list[str]:
    """Every directory of the host's cgroup trees that belongs to this agent's key."""
    key = cgroups.agent_key(agent_dir)
    found = subprocess.run(
        ["find", "/sys/fs/cgroup", "-maxdepth", "5", "-type", "d", "-name", "openha*"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    return [f"{top}/{key}" for top in found if (Path(top) / key).is_dir()]


@pytest.mark.skipif(HIERARCHY.mode == "none", reason="no cgroup hierarchy on this host")
def test_a_stopped_agent_leaves_no_empty_cgroup_level(
    lab: Lab, agent: AgentHarness, client: ClientNamespace, lb: LBConfig
) -> None:
    assert agent.put(lb.spec(lab, agent.agent_dir, 1)).status_code == 200
    group = group_of(agent, lb)
    pid = haproxy_of(agent.agent_dir, lb).pid()
    assert pid is not None and agent_group_dirs(agent.agent_dir)
    # Stopped with its HAProxy serving (for the next agent to adopt): the level stays.
    agent.stop()
    assert group.exists() and group.holds(pid)
    assert client.request(f"http://{lb.vip}/").status == 200
    agent.start()
    assert agent.api.delete(f"/v1/instances/{lb.instance_id}").status_code in (200, 204)
    agent.stop()
    assert agent_group_dirs(agent.agent_dir) == []


def as_instance(chroot: Path, uid: int, frame: bytes) -> int:
    """In a child: chroot to `chroot`, become `uid`, send `frame` to /syslog.sock there.
    Its exit status: 0 sent, 13 refused (EACCES), 1 anything else."""
    pid = os.fork()
    if pid == 0:  # only syscalls here: the parent has threads
        code = 1
        try:
            os.chroot(chroot)
            os.chdir("/")
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.connect("/syslog.sock")
                conn.sendall(frame)
            code = 0
        except PermissionError:
            code = 13
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def filed(agent_dir: Path, lb_id: str, marker: str) -> bool:
    """Whether a line holding `marker` was filed under `lb_id` (open or closed files)."""
    folder = log_paths(agent_dir).logs_root / lb_id
    return any(marker in p.read_text(errors="replace") for p in folder.glob("*") if p.is_file())


def test_an_instance_cannot_log_under_another_load_balancer(
    lab: Lab, agent: AgentHarness, lb: LBConfig
) -> None:
    other = lb.another(lab)
    for x in (lb, other):
        assert agent.put(x.spec(lab, agent.agent_dir, 1)).status_code == 200
    assert agent.service is not None
    uid = {s.instance_id: s.uid for _, s in agent.service.sandbox_sources()}
    chroot = instance_paths(agent.agent_dir, lb.instance_id).chroot_dir
    # A's own identity on A's own input, with B's tag: filed under A, never under B.
    marker = uuid.uuid4().hex
    line = f'<134>Dec  1 12:00:00 lb-{other.lb_id}[1]:  {{"forged":"{marker}"}}'.encode()
    assert as_instance(chroot, uid[lb.instance_id], b"%d %s" % (len(line), line)) == 0
    wait_for(lambda: filed(agent.agent_dir, lb.lb_id, marker), timeout=10)
    assert not filed(agent.agent_dir, other.lb_id, marker)
    # B's uid cannot even reach A's input (its socket is A's uid's alone).
    assert as_instance(chroot, uid[other.instance_id], b"") == 13
    # The inputs are the instances' own, and each chroot holds its own.
    sockets = [
        instance_paths(agent.agent_dir, x.instance_id).chroot_syslog_socket for x in (lb, other)
    ]
    stats = [s.stat() for s in sockets]
    assert stats[0].st_ino != stats[1].st_ino
    assert [st.st_uid for st in stats] == [uid[lb.instance_id], uid[other.instance_id]]
    assert all(stat.S_IMODE(st.st_mode) == 0o600 for st in stats)


def capabilities(pid: int) -> dict[str, int]:
    """CapEff and CapBnd of a process, from /proc."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("CapEff", "CapBnd"):
            out[key] = int(value.strip(), 16)
    return out


def test_keepalived_keeps_only_what_vrrp_needs(
    lab: Lab, agent: AgentHarness, client: ClientNamespace, lb: LBConfig
) -> None:
    """A pair's half alone on its segment: it becomes MASTER (its notify script ran as
    the script user), holds the VIP (network capabilities work), with no other capability."""
    paths = instance_paths(agent.agent_dir, lb.instance_id)
    keepalived = render_keepalived(
        VrrpSpec(
            lb_id=lb.lb_id,
            instance_id=lb.instance_id,
            vrid=1 + int(lb.instance_id[:2], 16) % 255,
            priority=100,
            interface="eth0",
            local_address=lb.instance_ip,
            peer_addresses=(lab.allocate_ip(),),  # nobody: no advert ever comes
            vip=lb.vip,
            vip_prefixlen=lab.prefixlen,
            track_file=str(paths.haproxy_down),
            notify_script=str(paths.files_dir / NOTIFY_SCRIPT),
        )
    )
    spec = lb.spec(
        lab,
        agent.agent_dir,
        1,
        vip_managed_by_keepalived=True,
        keepalived_config=keepalived,
        files={NOTIFY_SCRIPT: render_notify_script(str(paths.vrrp_state_file))},
    )
    resp = agent.put(spec)
    assert resp.status_code == 200, resp.text
    wait_for(lambda: agent.status(lb.instance_id)["vrrp_state"] == "MASTER", timeout=10)
    assert client.request(f"http://{lb.vip}/").status == 200
    wanted = sum(1 << bit for bit in KEEPALIVED_CAPS.values())
    config = paths.keepalived_config
    pids = [pid_from_file(paths.keepalived_pid, config), pid_from_file(paths.vrrp_pid, config)]
    assert None not in pids
    for pid in pids:
        assert capabilities(pid) == {"CapEff": wanted, "CapBnd": wanted}, pid  # type: ignore[arg-type]
    assert paths.vrrp_state_file.stat().st_uid == pwd.getpwnam(SCRIPT_USER).pw_uid
