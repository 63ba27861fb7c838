"""What happened to an instance's data plane, kept for diagnostics: a small JSON file.

HAProxy runs as plain daemons replacing one another (`agent.haproxy`), so no master
counts reloads: the agent does, here — starts, reloads, failed reloads, runtime
updates — with the last apply's outcome and the last gratuitous ARP it sent for the
VIP. The file lives in the instance directory (`InstancePaths.history`), so the
counts survive agent restarts and go with the instance. Nothing decides anything from
it: losing it loses only history, so it is written without fsync.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

MAX_ERROR_CHARS = 2000


class InstanceHistory:
    """Counters and last outcomes of one instance, loaded on first use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._data: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def _load(self) -> dict[str, Any]:
        if self._data is None:
            try:
                loaded = json.loads(self.path.read_text())
            except (OSError, ValueError):
                loaded = {}
            self._data = loaded if isinstance(loaded, dict) else {}
        return self._data

    def _save(self, data: dict[str, Any]) -> None:
        if not self.path.parent.is_dir():
            return  # the instance is being removed
        tmp = self.path.with_name(f".{self.path.name}.{threading.get_ident()}")
        try:
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return json.loads(json.dumps(self._load()))  # type: ignore[no-any-return]

    def count(self, event: str, error: str | None = None) -> None:
        """One more `event` (start, reload, failed_reload, failed_start, runtime_update)."""
        with self._lock:
            data = self._load()
            counts = data.setdefault("counts", {})
            counts[event] = int(counts.get(event, 0)) + 1
            data[f"last_{event}"] = {"at": time.time()} | (
                {"error": error[:MAX_ERROR_CHARS]} if error else {}
            )
            self._save(data)

    def applied(self, generation: int, action: str, error: str | None, seconds: float) -> None:
        """The outcome of an apply: what it did (start, reload, runtime, none) or its error."""
        with self._lock:
            data = self._load()
            data["last_apply"] = {
                "at": time.time(),
                "generation": generation,
                "ok": error is None,
                "action": action,
                "error": error[:MAX_ERROR_CHARS] if error else None,
                "seconds": round(seconds, 3),
            }
            if error is None:
                data["last_good_apply"] = data["last_apply"]
            self._save(data)

    def garp_sent(self, address: str, interface: str) -> None:
        with self._lock:
            data = self._load()
            data["garp"] = {"at": time.time(), "address": address, "interface": interface}
            self._save(data)
