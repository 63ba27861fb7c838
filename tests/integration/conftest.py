"""Fixtures for agent integration tests: a lab network, an agent, backends, a fake API.

Integration tests need root (namespaces, veths, real HAProxy); they are skipped
otherwise. Every fixture removes what it made, even when the test fails.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_support import AgentHarness, FakeAPI, LBConfig, Member

from openha.agent.purge import purge
from openha.lab import BackendServer, ClientNamespace, Lab

IS_ROOT = os.geteuid() == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if IS_ROOT:
        return
    skip = pytest.mark.skip(reason="integration tests need root (namespaces, real haproxy)")
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab() as lab:
        yield lab


@pytest.fixture
def agent_dir() -> Iterator[Path]:
    # Short and under /tmp: unix socket paths must stay under 108 bytes.
    path = Path(tempfile.mkdtemp(prefix="oha-", dir="/tmp"))
    # Traversable (not listable) for keepalived's unprivileged script user.
    path.chmod(0o711)
    try:
        yield path
    finally:
        purge(path)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def agent(agent_dir: Path) -> Iterator[AgentHarness]:
    harness = AgentHarness(agent_dir).start()
    try:
        yield harness
    finally:
        harness.stop()


@pytest.fixture
def client(lab: Lab) -> ClientNamespace:
    return ClientNamespace(lab)


@pytest.fixture
def backends(lab: Lab) -> list[BackendServer]:
    return [BackendServer(lab, f"web{i}") for i in range(1, 4)]


@pytest.fixture
def lb(lab: Lab, backends: list[BackendServer]) -> LBConfig:
    members = [Member(str(uuid.uuid4()), b.address) for b in backends]
    return LBConfig(
        instance_id=str(uuid.uuid4()),
        vip=lab.allocate_ip(),
        instance_ip=lab.allocate_ip(),
        members=members,
    )


@pytest.fixture
def fake_api() -> Iterator[FakeAPI]:
    with FakeAPI() as api:
        yield api
