"""The sandbox's pure parts: cgroup layout detection, v1 and v2 limits against a fake
cgroupfs tree, usage reading, the uid registry, and the flavor's resource keys."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from openha.agent.cgroups import (
    InstanceCgroup,
    Limits,
    agent_key,
    own_groups,
    parse_mounts,
)
from openha.agent.procs import confinement
from openha.agent.sandbox import SandboxHost, UidRegistry
from openha.providers.base import UnsupportedOption
from openha.providers.haproxy.driver import HAProxyProvider
from openha.render.haproxy import SANDBOX_GID_ENV, SANDBOX_UID_ENV

# This machine's layout: v1 controllers, and a v2 mount that holds none of them.
HYBRID = """\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 /nonexistent/unified cgroup2 rw,relatime 0 0
"""


def fake_v2(tmp_path: Path) -> Path:
    root = tmp_path / "unified"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (root / "cgroup.subtree_control").write_text("")
    return root


def test_a_v2_host_is_detected_only_with_its_controllers(tmp_path: Path) -> None:
    root = fake_v2(tmp_path)
    found = parse_mounts(f"cgroup2 {root} cgroup2 rw,nosuid 0 0\n")
    assert (found.mode, found.mounts) == ("v2", {"unified": root})
    (root / "cgroup.controllers").write_text("cpu io\n")  # memory and pids bound elsewhere
    assert parse_mounts(f"cgroup2 {root} cgroup2 rw 0 0\n").mode == "none"


def test_a_hybrid_host_is_v1_and_says_why() -> None:
    found = parse_mounts(HYBRID)
    assert found.mode == "v1"
    assert set(found.mounts) == {"cpu", "cpuacct", "memory", "pids"}
    assert "without these controllers" in found.detail
    # Co-mounted controllers share one directory.
    both = parse_mounts("cgroup /cg/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0\n")
    assert both.mounts == {"cpu": Path("/cg/cpu,cpuacct"), "cpuacct": Path("/cg/cpu,cpuacct")}
    assert "missing: memory, pids" in both.detail
    assert parse_mounts("").mode == "none"


def test_own_groups_reads_proc_cgroup() -> None:
    text = "9:name=systemd:/\n4:memory:/jobs/7\n2:cpu,cpuacct:/\n0::/init.scope\n"
    assert own_groups(text) == {
        "name=systemd": "/",
        "memory": "/jobs/7",
        "cpu": "/",
        "cpuacct": "/",
        "unified": "/init.scope",
    }


def test_v2_limits_usage_and_removal_on_a_fake_tree(tmp_path: Path) -> None:
    root = fake_v2(tmp_path)
    hierarchy = parse_mounts(f"cgroup2 {root} cgroup2 rw 0 0\n")
    group = InstanceCgroup.for_instance(hierarchy, {"unified": "/"}, "agent1", "inst")
    limits = Limits(cpu_weight=50, cpu_max=0.5, memory_max_mb=256, pids_max=64)
    assert group.create(limits) == []
    leaf = root / "openha" / "agent1" / "inst"
    assert group.dirs == {"unified": leaf} and group.path() == "/openha/agent1/inst"
    read = {n: (leaf / n).read_text() for n in ("cpu.weight", "cpu.max", "memory.max", "pids.max")}
    assert read == {
        "cpu.weight": "50",
        "cpu.max": "10000 20000",
        "memory.max": str(256 << 20),
        "pids.max": "64",
    }
    # Controllers are given to every level above the leaf, not to the leaf itself.
    for level in (root, root / "openha", root / "openha" / "agent1"):
        assert (level / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert not (leaf / "cgroup.subtree_control").exists()
    # No quota, no limits: v2 spells them "max".
    assert group.create(Limits()) == []
    assert (leaf / "cpu.max").read_text() == "max 20000"
    assert (leaf / "memory.max").read_text() == "max"
    # Usage as the kernel writes it.
    (leaf / "cpu.stat").write_text("usage_usec 1500000\nuser_usec 1000000\n")
    (leaf / "memory.current").write_text("1048576\n")
    (leaf / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    (leaf / "pids.current").write_text("5\n")
    usage = group.usage()
    assert usage.cpu_seconds == 1.5 and usage.memory_bytes == 1 << 20 and usage.oom_kills == 1
    assert usage.pids == 5 and usage.memory_max_bytes is None and usage.pids_max is None
    # The record brings the same group back (purge, adoption).
    again = InstanceCgroup.from_record(group.record())
    assert again.dirs == group.dirs
    # Removal: a real cgroupfs directory holds only its files; here they go first.
    for entry in leaf.iterdir():
        entry.unlink()
    assert again.remove() == []
    assert not leaf.exists()


def test_v2_controllers_refused_are_reported(tmp_path: Path) -> None:
    root = fake_v2(tmp_path)
    hierarchy = parse_mounts(f"cgroup2 {root} cgroup2 rw 0 0\n")
    group = InstanceCgroup.for_instance(hierarchy, {"unified": "/"}, "a", "i")
    # Unwritable even for root (the kernel says EBUSY where processes sit above).
    (root / "cgroup.subtree_control").unlink()
    (root / "cgroup.subtree_control").mkdir()
    problems = group.create(Limits())
    assert problems and "cannot enable cpu, memory, pids" in problems[0]


def test_v1_limits_on_a_fake_tree(tmp_path: Path) -> None:
    mounts = {c: tmp_path / c for c in ("cpu", "cpuacct", "memory", "pids")}
    text = "".join(f"cgroup {p} cgroup rw,{c} 0 0\n" for c, p in mounts.items())
    hierarchy = parse_mounts(text)
    assert hierarchy.mode == "v1"
    parent = {"cpu": "/", "cpuacct": "/", "memory": "/jobs/7", "pids": "/"}
    group = InstanceCgroup.for_instance(hierarchy, parent, "agent1", "inst")
    assert group.dirs["memory"] == mounts["memory"] / "jobs/7/openha/agent1/inst"
    assert group.create(Limits(cpu_weight=50, cpu_max=2, memory_max_mb=64, pids_max=32)) == []
    cpu = group.dirs["cpu"]
    assert (cpu / "cpu.shares").read_text() == "512"
    assert (cpu / "cpu.cfs_quota_us").read_text() == "40000"
    assert (group.dirs["memory"] / "memory.limit_in_bytes").read_text() == str(64 << 20)
    assert (group.dirs["pids"] / "pids.max").read_text() == "32"
    assert group.create(Limits()) == []
    assert (cpu / "cpu.cfs_quota_us").read_text() == "-1"
    assert (group.dirs["memory"] / "memory.limit_in_bytes").read_text() == "-1"
    (group.dirs["cpuacct"] / "cpuacct.usage").write_text("2500000000\n")
    (group.dirs["memory"] / "memory.usage_in_bytes").write_text("4096\n")
    (group.dirs["memory"] / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (group.dirs["memory"] / "memory.oom_control").write_text("oom_kill_disable 0\noom_kill 2\n")
    usage = group.usage()
    assert usage.cpu_seconds == 2.5 and usage.memory_bytes == 4096
    assert usage.memory_max_bytes is None and usage.oom_kills == 2


def test_a_stopping_agent_removes_its_emptied_levels_only(tmp_path: Path) -> None:
    mounts = {c: tmp_path / c for c in ("cpu", "cpuacct", "memory", "pids")}
    hierarchy = parse_mounts("".join(f"cgroup {p} cgroup rw,{c} 0 0\n" for c, p in mounts.items()))
    parent = {"cpu": "/", "cpuacct": "/", "memory": "/jobs/7", "pids": "/"}
    host = SandboxHost(hierarchy, parent, "agent1", UidRegistry(tmp_path / "uids", 1000, 8), None)
    mine = InstanceCgroup.for_instance(hierarchy, parent, "agent1", "inst")
    other = InstanceCgroup.for_instance(hierarchy, parent, "agent2", "inst")
    for group in (mine, other):
        for path in group.distinct():
            path.mkdir(parents=True)  # a fake tree: the groups without their files
    host.remove_empty_levels()  # an instance still there (left serving): nothing goes
    assert all(p.is_dir() for p in mine.distinct())
    for path in mine.distinct():
        path.rmdir()
    host.remove_empty_levels()
    assert not any(p.parent.exists() for p in mine.distinct())
    # Another agent's level, and so the `openha` level holding it, stay.
    assert all(p.is_dir() for p in other.distinct())
    for path in other.distinct():
        path.rmdir()
    SandboxHost(hierarchy, parent, "agent2", host.registry, None).remove_empty_levels()
    assert not (mounts["memory"] / "jobs/7/openha").exists()
    assert not (mounts["cpu"] / "openha").exists() and (mounts["memory"] / "jobs/7").is_dir()


def test_levels_weigh_as_the_instances_they_hold(tmp_path: Path) -> None:
    """Left at the default, all of a host's load balancers together would weigh one
    task next to the host's other processes: each level weighs the sum below it."""
    mounts = {c: tmp_path / c for c in ("cpu", "cpuacct", "memory", "pids")}
    hierarchy = parse_mounts("".join(f"cgroup {p} cgroup rw,{c} 0 0\n" for c, p in mounts.items()))
    parent = dict.fromkeys(mounts, "/")
    host = SandboxHost(hierarchy, parent, "agent1", UidRegistry(tmp_path / "uids", 1000, 8), None)
    for instance, weight in (("i1", 50), ("i2", 200)):
        group = InstanceCgroup.for_instance(hierarchy, parent, "agent1", instance)
        assert group.create(Limits(cpu_weight=weight)) == []
    other = InstanceCgroup.for_instance(hierarchy, parent, "agent2", "i3")
    assert other.create(Limits()) == []  # another agent's level, its shares unset (default)
    assert host.balance() == []
    cpu = mounts["cpu"] / "openha"
    assert (cpu / "agent1" / "cpu.shares").read_text() == str(512 + 2048)
    assert (cpu / "cpu.shares").read_text() == str(512 + 2048 + 1024)
    # v2: cpu.weight, bounded by 10000.
    root = fake_v2(tmp_path)
    v2 = parse_mounts(f"cgroup2 {root} cgroup2 rw 0 0\n")
    host2 = SandboxHost(v2, {"unified": "/"}, "a", host.registry, None)
    for instance in ("i1", "i2"):
        group = InstanceCgroup.for_instance(v2, {"unified": "/"}, "a", instance)
        assert group.create(Limits(cpu_weight=6000)) == []
    assert host2.balance() == []
    assert (root / "openha" / "a" / "cpu.weight").read_text() == "10000"


def test_v1_missing_controllers_are_reported_not_ignored(tmp_path: Path) -> None:
    hierarchy = parse_mounts(f"cgroup {tmp_path / 'cpu'} cgroup rw,cpu 0 0\n")
    group = InstanceCgroup.for_instance(hierarchy, {}, "a", "i")
    problems = group.create(Limits(memory_max_mb=64, pids_max=32))
    assert any("memory controller not mounted" in p for p in problems)
    assert any("pids controller not mounted" in p for p in problems)
    none = InstanceCgroup.for_instance(parse_mounts(""), {}, "a", "i")
    assert "no resource limit applies" in none.create(Limits())[0]


def test_agent_keys_differ_per_directory(tmp_path: Path) -> None:
    assert agent_key(tmp_path / "a") != agent_key(tmp_path / "b")
    assert agent_key(tmp_path / "a") == agent_key(tmp_path / "a")


def test_uid_registry_hands_out_distinct_uids_and_takes_them_back(tmp_path: Path) -> None:
    registry = UidRegistry(tmp_path / "uids", base=5_000_000, count=3)
    owners = [tmp_path / f"inst{i}" for i in range(3)]
    for owner in owners:
        owner.mkdir()
    uids = [registry.allocate(owner, owner.name) for owner in owners]
    assert len(set(uids)) == 3 and all(5_000_000 <= u < 5_000_003 for u in uids)
    assert registry.allocate(owners[0], "inst0") == uids[0]  # its own, again
    other = tmp_path / "late"
    other.mkdir()
    with pytest.raises(OSError, match="no free uid"):
        registry.allocate(other, "late")
    registry.release(uids[1], owners[0])  # not its owner: kept
    assert registry.owner(uids[1]) == str(owners[1])
    registry.release(uids[1], owners[1])
    assert registry.allocate(other, "late") == uids[1]
    # An owner whose directory is gone gives its uid up to the next one who asks.
    owners[2].rmdir()
    newcomer = tmp_path / "new"
    newcomer.mkdir()
    assert registry.allocate(newcomer, "new") == uids[2]


def test_confinement_reads_proc() -> None:
    facts = confinement(os.getpid())
    assert facts is not None and facts["uid"] == os.geteuid() and facts["root"] == "/"
    assert confinement(2**22 + 7) is None


def test_rendered_configs_read_the_uid_from_the_sandbox_env() -> None:
    template = (
        Path(__file__).parents[2] / "src/openha/render/templates/haproxy.cfg.j2"
    ).read_text()
    assert f'uid "${{{SANDBOX_UID_ENV}}}"' in template
    assert f'gid "${{{SANDBOX_GID_ENV}}}"' in template


@pytest.mark.parametrize(
    "data",
    [
        {"cpu_weight": 0},
        {"cpu_weight": 10001},
        {"cpu_weight": 1.5},
        {"cpu_weight": True},
        {"cpu_weight": "100"},
        {"cpu_max": 0},
        {"cpu_max": "1"},
        {"cpu_max": 2000},
        {"memory_max_mb": 8},
        {"memory_max_mb": 64.0},
        {"pids_max": 4},
        {"pids_max": None, "memory_max_mb": -1},
    ],
)
def test_bad_resource_keys_are_refused(data: dict[str, object]) -> None:
    with pytest.raises(UnsupportedOption):
        HAProxyProvider.validate_flavor(object.__new__(HAProxyProvider), data)


def test_good_resource_keys_pass() -> None:
    provider = object.__new__(HAProxyProvider)
    HAProxyProvider.validate_flavor(
        provider, {"cpu_weight": 1, "cpu_max": 0.25, "memory_max_mb": 128, "pids_max": 100}
    )
    HAProxyProvider.validate_flavor(provider, {"cpu_max": 2, "pids_max": None})
