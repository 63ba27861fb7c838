"""Process liveness in the database: APIs and controllers beat in the `services` table.

Two decisions need it. Is a silent host dead, or was nobody listening? Agents
heartbeat through an API, so the controller counts a host's silence only while
an API was up to hear it, from its start to its last beat (`listening`):
restarting the API is not a host failure. And has a controller died? Its claims
on load balancers are free as soon as it stops beating, not only once they expire.

A process beats from a daemon thread (`Beater`) and removes its row when it stops
cleanly; a crashed one leaves a row that goes stale after `dead_after` seconds.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from openha.db import transaction
from openha.models import Service, utcnow_precise

log = logging.getLogger(__name__)

KIND_API = "api"
KIND_CONTROLLER = "controller"


def new_service_id(kind: str) -> str:
    """A name that says where the process runs and stays unique across its restarts."""
    return f"{kind}-{socket.gethostname()[:32]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


_LISTENING = select(func.min(Service.started_at), func.max(Service.last_seen_at)).where(
    Service.kind == KIND_API, Service.last_seen_at >= bindparam("alive_since")
)


def listening(
    db: Session | Connection, dead_after: float, now: datetime
) -> tuple[datetime, datetime] | None:
    """When APIs were up to receive heartbeats: (since, until), or None when none is up.

    `since`: the start of the longest-running API alive now (agents reach any of
    them); `until`: the latest beat of one (no later than `now`). A host's silence
    counts only inside this window: an API that crashed a moment ago heard nothing
    since its last beat, and that is not the hosts' fault.
    """
    since, until = db.execute(
        _LISTENING, {"alive_since": now - timedelta(seconds=dead_after)}
    ).one()
    if since is None or until is None:
        return None
    return since, min(until, now)


class Beater:
    """Keeps one process's `services` row fresh; its `alive` says whether it managed to."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        kind: str,
        *,
        interval: float,
        dead_after: float,
        service_id: str | None = None,
    ) -> None:
        self.sessions = sessions
        self.kind = kind
        self.interval = interval
        self.dead_after = dead_after
        self.id = service_id or new_service_id(kind)
        self.started_at = utcnow_precise()
        self._last_ok: datetime | None = None
        # What the process publishes with each beat (the controller's counters).
        self.report: Callable[[], dict[str, Any]] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> bool:
        """Write one beat (inserting the row if it is missing); False when the database failed."""
        now = utcnow_precise()
        values: dict[str, Any] = {"last_seen_at": now}
        if self.report is not None:
            values["metrics"] = self.report()
        try:
            with transaction(self.sessions) as s:
                result = s.execute(
                    update(Service)
                    .where(Service.id == self.id)
                    .values(values)
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount == 0:  # type: ignore[attr-defined]
                    s.add(
                        Service(
                            id=self.id,
                            kind=self.kind,
                            host_name=socket.gethostname()[:255],
                            pid=os.getpid(),
                            started_at=self.started_at,
                            last_seen_at=now,
                            metrics=values.get("metrics"),
                        )
                    )
        except Exception as exc:  # a database hiccup must not kill the beat
            log.warning("%s: liveness beat failed: %s", self.id, exc)
            return False
        self._last_ok = now
        return True

    @property
    def alive(self) -> bool:
        """True while the last successful beat is recent enough for others to trust it.

        Kept a beat interval short of `dead_after`: a process that could not beat for
        that long must assume the others are about to declare it dead.
        """
        if self._last_ok is None:
            return False
        margin = max(self.dead_after - self.interval, self.interval)
        return utcnow_precise() - self._last_ok < timedelta(seconds=margin)

    def start(self) -> None:
        self.beat()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"{self.kind}-liveness", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def stop(self) -> None:
        """Stop beating and remove the row: a clean exit is not a crash to wait out."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        try:
            with transaction(self.sessions) as s:
                s.execute(delete(Service).where(Service.id == self.id))
        except Exception as exc:
            log.warning("%s: cannot remove its liveness row: %s", self.id, exc)
