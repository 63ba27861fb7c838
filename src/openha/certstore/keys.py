"""Which key store certificate references are read from: the embedded one, or Barbican.

`OPENHA_KEY_MANAGER=local` (the default) reads them from OpenHA's own store
(`/key-manager/v1`); `barbican` from a real Barbican found in the Keystone
catalogue (`openha.certstore.barbican`), as Octavia's `barbican_cert_manager` does.
The API and the controller make one `KeyManager` from their settings and ask it
for a `Source` per session and project view.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from sqlalchemy.orm import Session

from openha.certstore.material import LocalSource, Source
from openha.certstore.sealing import Sealer

if TYPE_CHECKING:
    from openha.settings import Settings

LOCAL = "local"
BARBICAN = "barbican"


class KeyManager(Protocol):
    def source(self, session: Session, project_id: str | None) -> Source:
        """Where references are read, as `project_id` sees them (None: every project)."""
        ...

    def grant(self, user_token: str | None, ref: str) -> None:
        """Let OpenHA's service user read `ref` on behalf of the token's owner (Barbican's
        ACLs, as Octavia sets them when a reference is given; RefError when the owner
        cannot); nothing for the local store."""
        ...


class LocalKeyManager:
    def __init__(self, sealer: Sealer) -> None:
        self.sealer = sealer

    def source(self, session: Session, project_id: str | None) -> Source:
        return LocalSource(session, self.sealer, project_id)

    def grant(self, user_token: str | None, ref: str) -> None:
        return None


def from_settings(settings: Settings) -> KeyManager:
    if settings.key_manager == BARBICAN:
        from openha.certstore.barbican import BarbicanKeyManager

        return BarbicanKeyManager(settings)
    return LocalKeyManager(Sealer.from_settings(settings))
