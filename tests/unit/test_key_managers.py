"""Which key store certificate references are read from (`OPENHA_KEY_MANAGER`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from openha.certstore import keys
from openha.certstore.barbican import BarbicanKeyManager
from openha.certstore.material import RefError


def test_the_embedded_store_by_default(tmp_path: Path) -> None:
    from openha.settings import Settings

    manager = keys.from_settings(Settings(state_dir=tmp_path))
    assert isinstance(manager, keys.LocalKeyManager)
    manager.grant("any-token", "a-ref")  # nothing to grant in OpenHA's own store


def test_barbican_needs_the_service_user(tmp_path: Path) -> None:
    from openha.settings import Settings

    with pytest.raises(ValueError, match="OPENHA_KEYSTONE_AUTH_URL"):
        keys.from_settings(Settings(state_dir=tmp_path, key_manager="barbican"))
    manager = keys.from_settings(
        Settings(
            state_dir=tmp_path,
            key_manager="barbican",
            keystone_auth_url="http://127.0.0.1:9/v3",
            keystone_password="pw",
        )
    )
    assert isinstance(manager, BarbicanKeyManager)
    # A reference that names nothing Barbican could hold is refused without a call.
    with pytest.raises(RefError):
        manager.source(None, None).parts("not-a-reference")  # type: ignore[arg-type]
    with pytest.raises(RefError):  # no tenant token: nothing can be granted
        manager.grant(None, "0b5e1a4c-6f0e-4a55-8f3e-0d9c1f2a3b4c")
    manager.grant(None, "not-a-reference")  # refused by the read, not here


def test_a_first_read_finds_the_endpoint_without_waiting_on_itself(tmp_path: Path) -> None:
    """Making the service user's client looks the endpoint up in the catalogue (which
    needs the session): it must fail fast when Keystone is away, never hang."""
    import threading

    from openha.settings import Settings

    manager = BarbicanKeyManager(
        Settings(
            state_dir=tmp_path,
            key_manager="barbican",
            keystone_auth_url="http://127.0.0.1:9/v3",  # nothing listens
            keystone_password="pw",
        )
    )
    outcome: list[str] = []

    def read() -> None:
        try:
            manager.source(None, None).parts(  # type: ignore[arg-type]
                "http://127.0.0.1:9/v1/secrets/0b5e1a4c-6f0e-4a55-8f3e-0d9c1f2a3b4c"
            )
        except RefError:
            outcome.append("refused")

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive()
    assert outcome == ["refused"]
