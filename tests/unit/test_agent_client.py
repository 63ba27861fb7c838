"""The controller's agent client: what each call costs before it reaches the network."""

from __future__ import annotations

import ssl
from typing import Any

import pytest

from openha.providers.haproxy import agent_client
from openha.providers.haproxy.agent_client import AgentAddress


def test_agent_calls_share_one_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client per agent call must not load the CA bundle again each time (~50 ms of
    CPU per call, most of the controller's work when it creates a fleet)."""
    agent_client._tls.cache_clear()
    built: list[Any] = []
    original = ssl.create_default_context

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        built.append((args, kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counting)
    agents = [AgentAddress(f"http://127.0.0.1:{port}", "secret") for port in (1, 2, 3)]
    for agent in agents * 2:
        with agent_client._client(agent) as client:
            assert client.base_url.host == "127.0.0.1"
    assert len(built) == 1
    agent_client._tls.cache_clear()


def test_a_ca_file_gives_its_own_context(tmp_path: Any) -> None:
    agent_client._tls.cache_clear()
    system = agent_client._tls(True)
    assert agent_client._tls(True) is system
    assert system.verify_mode == ssl.CERT_REQUIRED
    with pytest.raises((FileNotFoundError, ssl.SSLError)):
        agent_client._tls(str(tmp_path / "missing-ca.pem"))
    agent_client._tls.cache_clear()
