"""Sealing payloads at rest with the operator's Fernet keys (AES-128-CBC + HMAC-SHA256).

The first key seals, every key opens (`MultiFernet`), so a key is rotated by putting
a new one first, resealing (`Sealer.reseal`, `openha certstore reseal`), then dropping
the old one. Without configured keys, one is made on first use in
`<state_dir>/certstore.key` (mode 0600), shared by the processes of one machine.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from openha.settings import Settings

KEY_FILE = "certstore.key"


class SealError(Exception):
    """A sealed payload no configured key opens (a key was dropped too early)."""


def _key_file(path: Path) -> str:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(Fernet.generate_key().decode() + "\n")
        # link() never replaces: when two processes race, the first key wins for both.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
        tmp.unlink()
    return path.read_text().strip()


class Sealer:
    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError("the certificate store needs at least one key")
        try:
            self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])
        except ValueError:
            raise ValueError(
                "certstore_keys must be Fernet keys (urlsafe base64 of 32 bytes)"
            ) from None

    @classmethod
    def from_settings(cls, settings: Settings) -> Sealer:
        keys = list(settings.certstore_keys) or [_key_file(settings.state_dir / KEY_FILE)]
        return cls(keys)

    def seal(self, payload: bytes) -> str:
        return self._fernet.encrypt(payload).decode()

    def open(self, sealed: str) -> bytes:
        try:
            return self._fernet.decrypt(sealed.encode())
        except InvalidToken:
            raise SealError("no configured certificate store key opens this payload") from None

    def reseal(self, sealed: str) -> str:
        """The payload sealed again with the first key."""
        try:
            return self._fernet.rotate(sealed.encode()).decode()
        except InvalidToken:
            raise SealError("no configured certificate store key opens this payload") from None
