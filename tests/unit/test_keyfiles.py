"""Certificate keys on an agent host: on a tmpfs, root's 0600, never in the spec on disk.

`agent.keyfiles` mounts a tmpfs for the keys directory when it is on a disk (here,
as in containers whose /run is not a tmpfs), links each key file from the
instance's files directory, and keeps only a mark in the spec written to disk; an
agent that finds the mark but not the key (a reboot emptied the tmpfs) treats the
instance as never applied, so that the controller sends it again.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from openha.agent import keyfiles, state
from openha.agent.keyfiles import ON_TMPFS, KeyFiles, mount_of, prepare, redacted, release
from openha.agent.paths import instance_paths
from openha.agent.service import AgentService
from openha.domain.spec import InstanceSpec
from openha.settings import Settings
from tests.tlscerts import issue, make_ca

INSTANCE = "5b0f3d52-8f7e-4c1e-9d55-2f1c0a7b9e11"


def _mounts_at(path: Path) -> int:
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return sum(1 for line in lines if line.split()[4] == str(path))


@pytest.fixture
def keys(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "keys"
    try:
        yield path
    finally:
        release(path)


def _spec(pem: str) -> InstanceSpec:
    return InstanceSpec(
        instance_id=INSTANCE,
        load_balancer_id="lb",
        project_id="p",
        generation=3,
        namespace="ohi-" + INSTANCE.replace("-", ""),
        interfaces=(),
        vip_address="198.51.100.5",
        haproxy_config="global\n",
        files={"l1-0.pem": pem, "l1.crt-list": "/x/l1-0.pem\n", "vrrp_notify.sh": "#!/bin/sh\n"},
    )


def test_a_tmpfs_is_mounted_where_the_disk_would_hold_keys(keys: Path) -> None:
    found = mount_of(keys.parent)
    assert found is not None and found[1] not in keyfiles.MEMORY_FILESYSTEMS
    prepare(keys)
    assert mount_of(keys) == (str(keys), "tmpfs")
    assert keys.stat().st_mode & 0o777 == 0o700
    prepare(keys)  # again (an agent restart): no second mount on top
    assert _mounts_at(keys) == 1
    release(keys)
    assert not keys.exists() and _mounts_at(keys) == 0


def test_on_a_tmpfs_already_nothing_is_mounted() -> None:
    base = Path(tempfile.mkdtemp(prefix="ohk-", dir="/dev/shm"))
    try:
        keys = base / "keys"
        prepare(keys)
        assert mount_of(keys) == ("/dev/shm", "tmpfs")
        assert _mounts_at(keys) == 0
    finally:
        shutil.rmtree(base)


def test_key_files_are_linked_from_the_instance_and_root_only(keys: Path, tmp_path: Path) -> None:
    prepare(keys)
    store = KeyFiles(keys)
    files = tmp_path / "files"
    files.mkdir()
    link = files / "l1-0.pem"
    link.write_text("an older agent's plain file\n")  # replaced by the link at once
    store.place(INSTANCE, link, "PEM 1\n")
    assert link.is_symlink() and link.read_text() == "PEM 1\n"
    target = link.resolve()
    assert target == keys / INSTANCE / "l1-0.pem"
    st = target.stat()
    assert (st.st_mode & 0o777, st.st_uid) == (0o600, 0)
    assert (keys / INSTANCE).stat().st_mode & 0o777 == 0o700
    assert store.linked(INSTANCE, link)
    store.place(INSTANCE, link, "PEM 2\n")  # rotated: same link, new content
    assert link.read_text() == "PEM 2\n"
    (keys / INSTANCE / "gone.pem").write_text("old")
    store.prune(INSTANCE, {"l1-0.pem"})
    assert sorted(p.name for p in (keys / INSTANCE).iterdir()) == ["l1-0.pem"]
    store.remove(INSTANCE)
    assert not (keys / INSTANCE).exists()
    store.place(INSTANCE, link, "PEM 3\n")
    store.place("other", files / "other.pem", "PEM 4\n")
    store.prune_instances({INSTANCE})
    assert sorted(p.name for p in keys.iterdir()) == [INSTANCE]


def test_the_spec_on_disk_holds_a_mark_and_the_tmpfs_gives_the_key_back(
    keys: Path, tmp_path: Path
) -> None:
    issued = issue(make_ca(), "k.example", ("k.example",))
    spec = _spec(issued.cert_pem + issued.key_pem())
    assert spec.key_files() == ("l1-0.pem",)
    kept = redacted(spec)
    assert kept.files["l1-0.pem"] == ON_TMPFS
    assert kept.files["l1.crt-list"] == spec.files["l1.crt-list"]
    paths = instance_paths(tmp_path / "agent", INSTANCE)
    paths.instance_dir.mkdir(parents=True)
    state.save_spec(paths, kept)
    assert "PRIVATE KEY" not in paths.spec_file.read_text()
    prepare(keys)
    store = KeyFiles(keys)
    loaded = state.load_spec(paths)
    assert loaded is not None
    assert store.restore(loaded) is None  # nothing on the tmpfs yet
    paths.files_dir.mkdir()
    store.place(INSTANCE, paths.files_dir / "l1-0.pem", spec.files["l1-0.pem"])
    assert store.restore(loaded) == spec  # equal: the controller's next push is a no-op
    assert redacted(_spec("no key here")) == _spec("no key here")


def test_an_agent_that_lost_the_keys_waits_for_the_controller(tmp_path: Path) -> None:
    """Found on disk with its keys gone (a reboot), an instance is known but not applied:
    its status says generation 0, which makes the controller push it again."""
    agent_dir = tmp_path / "agent"
    settings = Settings(
        state_dir=tmp_path, agent_dir=agent_dir, agent_keys_dir=tmp_path / "agent-keys"
    )
    issued = issue(make_ca(), "k.example", ("k.example",))
    spec = _spec(issued.cert_pem + issued.key_pem())
    service = AgentService(settings)
    try:
        paths = instance_paths(agent_dir, INSTANCE)
        paths.instance_dir.mkdir(parents=True)
        state.save_spec(paths, redacted(spec))
        assert service._load(INSTANCE) is None
        assert service.known(INSTANCE)
        status = service.status(INSTANCE)
        assert status is not None and status.applied_generation == 0
        # With its keys where the agent keeps them, it is loaded whole.
        service._prepare_keys()
        paths.files_dir.mkdir()
        service.keys.place(INSTANCE, paths.files_dir / "l1-0.pem", spec.files["l1-0.pem"])
        other = AgentService(settings)
        inst = other._load(INSTANCE)
        assert inst is not None and inst.spec == spec

        # An older agent's spec and files held the key in clear: moved to the tmpfs.
        service.keys.remove(INSTANCE)
        (paths.files_dir / "l1-0.pem").unlink()
        (paths.files_dir / "l1-0.pem").write_text(spec.files["l1-0.pem"])
        state.save_spec(paths, spec)
        inst = AgentService(settings)._load(INSTANCE)
        assert inst is not None and inst.spec == spec
        assert "PRIVATE KEY" not in paths.spec_file.read_text()
        assert service.keys.linked(INSTANCE, paths.files_dir / "l1-0.pem")
        assert (paths.files_dir / "l1-0.pem").read_text() == spec.files["l1-0.pem"]
    finally:
        release(tmp_path / "agent-keys")


def test_the_default_keys_directory_is_per_agent() -> None:
    one = keyfiles.default_keys_dir(Path("/var/lib/openha/agent"))
    two = keyfiles.default_keys_dir(Path("/var/lib/openha/agent2"))
    assert one.parent == two.parent == keyfiles.KEYS_ROOT and one != two
    assert os.path.isabs(one)
