"""Host enrolment: a host gets a credential before its agent first registers."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from openha.credentials import hash_token, new_token_secret
from openha.models import Host


def enroll(
    session: Session, name: str, availability_zone: str = "", capacity: int | None = None
) -> str:
    """Create (or re-key) the host `name` and return its new enrolment credential.

    Re-enrolling an existing host replaces its credential: the old agent can no
    longer heartbeat, which is what an operator rotating a leaked key wants.
    `capacity` is the operator's setting; without one the host's resources decide.
    """
    secret = new_token_secret()
    host = session.scalar(select(Host).where(Host.name == name))
    if host is None:
        host = Host(
            name=name,
            availability_zone=availability_zone,
            capacity=capacity,
            credential_hash=hash_token(secret),
        )
        session.add(host)
    else:
        host.credential_hash = hash_token(secret)
        if availability_zone:
            host.availability_zone = availability_zone
        if capacity is not None:
            host.capacity = capacity
    session.flush()
    return secret


def authenticate(session: Session, secret: str) -> Host | None:
    return session.scalar(select(Host).where(Host.credential_hash == hash_token(secret)))
