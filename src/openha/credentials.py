"""Secrets for API tokens and host enrolment: generated here, stored only as hashes.

A neutral module: the API authenticates with it, host enrolment and the CLI mint
with it, and none of them has to import another to do so.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from sqlalchemy.orm import Session

from openha.models import Token


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token_secret() -> str:
    return secrets.token_urlsafe(32)


def create_token(
    session: Session,
    project_id: str,
    roles: list[str],
    description: str = "",
    expires_at: datetime | None = None,
) -> str:
    """Store a new token (hashed) and return the secret, shown once."""
    secret = new_token_secret()
    session.add(
        Token(
            token_hash=hash_token(secret),
            project_id=project_id,
            roles=roles,
            description=description,
            expires_at=expires_at,
        )
    )
    return secret
