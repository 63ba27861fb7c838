"""Events: the audit trail of what happened to load balancers, hosts and instances."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from openha.models import Event, LoadBalancer

log = logging.getLogger("openha.events")


def emit(
    session: Session,
    kind: str,
    message: str,
    *,
    severity: str = "INFO",
    lb: LoadBalancer | None = None,
    host_id: str | None = None,
    instance_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Record an event in the caller's transaction (it lands only if the change does)."""
    session.add(
        Event(
            kind=kind,
            message=message,
            severity=severity,
            project_id=lb.project_id if lb is not None else None,
            load_balancer_id=lb.id if lb is not None else None,
            host_id=host_id,
            instance_id=instance_id,
            details=details or {},
        )
    )
    log.log(
        logging.WARNING if severity in ("WARNING", "ERROR") else logging.INFO,
        "%s: %s",
        kind,
        message,
    )
