"""Ship closed log segments to S3-compatible object stores, in batch, from the agent.

A load balancer whose targets include an S3 store gets its current files closed every
`interval` seconds (see `LogStore.rotate`); each closed segment is then uploaded once
per store, gzip'd, as `<project>/<lb id>/YYYY/MM/DD/HH/<host>-<kind>-<closed ns>.jsonl.gz`
(the hour of its first line, UTC), and a marker file remembers that it went. A store
that fails is retried at the next pass; its last error shows in the delivery state.
Nothing here is on the path of a request: segments are whole files, seconds old.
"""

from __future__ import annotations

import gzip
import json
import logging
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from openha.agent.logstore import SHIPPED, LogStore, Segment
from openha.domain.logtargets import S3Target

log = logging.getLogger(__name__)


@dataclass
class StoreState:
    target: S3Target
    shipped_objects: int = 0
    shipped_bytes: int = 0
    last_shipped_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    pending_segments: int = 0
    pending_bytes: int = 0
    oldest_pending_at: float | None = None
    retry_at: float = 0.0
    failures: int = field(default=0, repr=False)

    def view(self) -> dict[str, Any]:
        now = time.time()
        return {
            "target": self.target.id,
            "type": "s3",
            "endpoint": self.target.endpoint,
            "bucket": self.target.bucket,
            "shipped_objects": self.shipped_objects,
            "shipped_bytes": self.shipped_bytes,
            "last_shipped_at": self.last_shipped_at,
            "pending_segments": self.pending_segments,
            "pending_bytes": self.pending_bytes,
            "lag_seconds": round(now - self.oldest_pending_at, 1)
            if self.oldest_pending_at
            else 0.0,
            "last_error": self.last_error,
        }


def object_key(project_id: str, lb_id: str, host: str, seg: Segment, first_ts: float) -> str:
    when = datetime.fromtimestamp(first_ts, UTC)
    project = urllib.parse.quote(project_id or "-", safe="")
    name = urllib.parse.quote(host, safe="")
    return f"{project}/{lb_id}/{when:%Y/%m/%d/%H}/{name}-{seg.kind}-{seg.closed_ns}.jsonl.gz"


def _first_ts(data: bytes, default: float) -> float:
    first = data.split(b"\n", 1)[0]
    try:
        ts = json.loads(first).get("ts")
    except (ValueError, AttributeError):
        return default
    return float(ts) if isinstance(ts, int | float) else default


class Shipper:
    def __init__(self, store: LogStore, host_name: str) -> None:
        self.store = store
        self.host_name = host_name
        self.states: dict[str, StoreState] = {}
        self._clients: dict[tuple[str, str], Any] = {}

    def _client(self, target: S3Target) -> Any:
        key = (target.endpoint, target.region)
        client = self._clients.get(key)
        if client is None:
            import boto3  # imported on first use: most agents never ship to S3
            from botocore.config import Config

            client = boto3.client(
                "s3",
                endpoint_url=target.endpoint,
                region_name=target.region,
                config=Config(
                    connect_timeout=2,
                    read_timeout=15,
                    retries={"max_attempts": 2},
                    s3={"addressing_style": "path"},
                ),
            )
            self._clients[key] = client
        return client

    def is_shipped(self, seg: Segment) -> bool:
        """Whether every S3 target of the segment's LB has it (for the quota's count)."""
        meta = self.store.meta(seg.lb_id)
        targets = [t for t in (meta.targets if meta else []) if t.get("type") == "s3"]
        marks = self.store.lb_dir(seg.lb_id) / SHIPPED
        return all((marks / f"{seg.name}.{S3Target(**t).id}").exists() for t in targets)

    def targets_of(self, lb_id: str) -> list[S3Target]:
        meta = self.store.meta(lb_id)
        if meta is None:
            return []
        return [S3Target(**t) for t in meta.targets if t.get("type") == "s3"]

    def intervals(self) -> dict[str, float]:
        """Each shipped LB's shortest interval: how often its files are closed."""
        out = {}
        for lb_id in self.store.shipped_ids():
            targets = self.targets_of(lb_id)
            if targets:
                out[lb_id] = float(min(t.interval for t in targets))
        return out

    def ship_once(self) -> int:
        """Upload every closed segment not yet in its stores; returns how many went."""
        sent = 0
        now = time.time()
        pending: dict[str, list[tuple[int, float]]] = {}
        for lb_id in self.store.shipped_ids():
            targets = self.targets_of(lb_id)
            if not targets:
                continue
            meta = self.store.meta(lb_id)
            assert meta is not None
            marks = self.store.lb_dir(lb_id) / SHIPPED
            for seg in self.store.segments(lb_id):
                for target in targets:
                    state = self.states.setdefault(target.id, StoreState(target))
                    mark = marks / f"{seg.name}.{target.id}"
                    if mark.exists():
                        continue
                    if state.retry_at > now:
                        try:
                            size = seg.path.stat().st_size
                        except FileNotFoundError:
                            continue
                        pending.setdefault(target.id, []).append((size, seg.closed_ns / 1e9))
                        continue
                    if self._ship(state, meta.project_id, seg, mark):
                        sent += 1
                    else:
                        with_size = seg.path.stat().st_size if seg.path.exists() else 0
                        pending.setdefault(target.id, []).append((with_size, seg.closed_ns / 1e9))
        for target_id, state in self.states.items():
            items = pending.get(target_id, [])
            state.pending_segments = len(items)
            state.pending_bytes = sum(size for size, _ in items)
            state.oldest_pending_at = min((at for _, at in items), default=None)
        return sent

    def _ship(self, state: StoreState, project_id: str, seg: Segment, mark: Any) -> bool:
        try:
            data = seg.path.read_bytes()
        except FileNotFoundError:
            return True
        if data:
            key = object_key(
                project_id, seg.lb_id, self.host_name, seg, _first_ts(data, seg.closed_ns / 1e9)
            )
            body = gzip.compress(data, compresslevel=6)
            try:
                self._client(state.target).put_object(
                    Bucket=state.target.bucket,
                    Key=key,
                    Body=body,
                    ContentType="application/x-ndjson",
                    ContentEncoding="gzip",
                )
            except Exception as exc:  # botocore's errors, connection errors, credentials
                state.failures += 1
                state.last_error = f"{type(exc).__name__}: {exc}"[:500]
                state.last_error_at = time.time()
                state.retry_at = time.time() + min(60.0, 2.0 ** min(state.failures, 6))
                if state.failures == 1:
                    log.warning("shipping logs to %s failed: %s", state.target.endpoint, exc)
                return False
            state.shipped_objects += 1
            state.shipped_bytes += len(body)
            state.last_shipped_at = time.time()
        state.failures = 0
        state.last_error = None
        state.retry_at = 0.0
        mark.parent.mkdir(mode=0o700, exist_ok=True)
        mark.touch()
        return True
