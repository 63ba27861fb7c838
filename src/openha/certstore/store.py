"""Secrets and containers in the database, scoped by project like every other object.

`project_id=None` is an administrator's view (every project); any other value only
sees that project's rows. Payloads are sealed here and opened only by `payload`.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from openha.certstore.sealing import Sealer
from openha.models import StoredContainer, StoredSecret

T = TypeVar("T", StoredSecret, StoredContainer)

SECRET_TYPES = ("symmetric", "public", "private", "passphrase", "certificate", "opaque")
CONTAINER_TYPES = ("generic", "rsa", "certificate")
# Barbican's names per container type (generic takes any).
CONTAINER_NAMES = {
    "certificate": ("certificate", "private_key", "private_key_passphrase", "intermediates"),
    "rsa": ("public_key", "private_key", "private_key_passphrase"),
}
REQUIRED_NAMES = {"certificate": ("certificate",), "rsa": ("public_key", "private_key")}


def find(session: Session, model: type[T], ident: str, project_id: str | None) -> T | None:
    row = session.get(model, ident)
    if row is None or (project_id is not None and row.project_id != project_id):
        return None
    return row


def listing(
    session: Session,
    model: type[T],
    project_id: str | None,
    filters: dict[str, Any],
    limit: int,
    offset: int,
) -> tuple[list[T], int]:
    stmt = select(model)
    if project_id is not None:
        stmt = stmt.where(model.project_id == project_id)
    for column, value in filters.items():
        stmt = stmt.where(getattr(model, column) == value)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(
        stmt.order_by(model.created_at, model.id).offset(offset).limit(limit)
    ).all()
    return list(rows), total


def add_secret(
    session: Session, sealer: Sealer, payload: bytes | None, **columns: Any
) -> StoredSecret:
    secret = StoredSecret(**columns)
    if payload is not None:
        secret.sealed_payload = sealer.seal(payload)
    session.add(secret)
    session.flush()
    return secret


def store_payload(sealer: Sealer, secret: StoredSecret, payload: bytes, content_type: str) -> None:
    secret.sealed_payload = sealer.seal(payload)
    secret.payload_content_type = content_type


def payload(sealer: Sealer, secret: StoredSecret) -> bytes | None:
    return None if secret.sealed_payload is None else sealer.open(secret.sealed_payload)


def container_parts(
    session: Session, sealer: Sealer, container: StoredContainer
) -> dict[str, bytes | None]:
    """A container's secrets by name, opened (None for a secret gone or without payload)."""
    parts: dict[str, bytes | None] = {}
    for entry in container.secret_refs:
        secret = session.get(StoredSecret, entry["secret_id"])
        parts[entry["name"]] = None if secret is None else payload(sealer, secret)
    return parts


def reseal_all(session: Session, sealer: Sealer) -> int:
    """Seal every payload again with the first key (after a key rotation)."""
    count = 0
    for secret in session.scalars(
        select(StoredSecret).where(StoredSecret.sealed_payload.is_not(None))
    ):
        assert secret.sealed_payload is not None
        secret.sealed_payload = sealer.reseal(secret.sealed_payload)
        count += 1
    return count
