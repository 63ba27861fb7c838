"""Sealing the certificate store's payloads: keys from settings or a key file, rotation."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from openha.certstore.refs import parse_ref
from openha.certstore.sealing import KEY_FILE, Sealer, SealError
from openha.settings import Settings


def test_a_key_file_is_made_once_and_shared(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    one = Sealer.from_settings(settings)
    sealed = one.seal(b"payload")
    assert b"payload" not in sealed.encode()
    assert (tmp_path / KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert Sealer.from_settings(settings).open(sealed) == b"payload"


def test_rotation_keeps_old_payloads_readable_until_resealed() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    sealed = Sealer([old]).seal(b"x")
    rotated = Sealer([new, old])
    assert rotated.open(sealed) == b"x"
    resealed = rotated.reseal(sealed)
    assert Sealer([new]).open(resealed) == b"x"
    with pytest.raises(SealError):
        Sealer([new]).open(sealed)


def test_bad_keys_are_refused() -> None:
    with pytest.raises(ValueError):
        Sealer(["not a key"])
    with pytest.raises(ValueError):
        Sealer([])


def test_references_as_octavia_reads_them() -> None:
    uid = "0f6a2f60-0f5e-4d6b-9a53-4f5c7e0c1a10"
    assert parse_ref(f"https://kms/key-manager/v1/containers/{uid}").kind == "containers"  # type: ignore[union-attr]
    assert parse_ref(f"http://x/v1/secrets/{uid}/").kind == "secrets"  # type: ignore[union-attr]
    assert parse_ref(uid).kind is None  # type: ignore[union-attr]
    for bad in ("", "nope", f"http://x/v1/orders/{uid}", "http://x/v1/secrets/abc"):
        assert parse_ref(bad) is None
