"""/v2/manage/prometheus/targets: Prometheus' HTTP service discovery of agents.

One target group per host with an agent address, in the format `http_sd_configs`
reads, labelled with the host's id, name and zone. Hosts that are down stay
listed, so their `up` series reads 0 and alerts. Like /metrics it takes an admin
token or the scrape credential (`Authorization: Bearer`, the `metrics_token`
setting), which Prometheus sends with `authorization.credentials_file`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select

from openha.api.metrics import scraper
from openha.models import Host

router = APIRouter(tags=["prometheus"])


def target_group(host_id: str, name: str, zone: str, url: str) -> dict[str, Any] | None:
    """The agent at `url` as an HTTP SD target group (None for an unusable address)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return {
        "targets": [parts.netloc],
        "labels": {
            "__scheme__": parts.scheme,
            "__metrics_path__": f"{parts.path.rstrip('/')}/metrics",
            "host_id": host_id,
            "host": name,
            "availability_zone": zone,
        },
    }


@router.get("/manage/prometheus/targets", dependencies=[Depends(scraper)])
def prometheus_targets(request: Request) -> list[dict[str, Any]]:
    sessions = request.app.state.session_factory
    with sessions() as session:
        rows = session.execute(
            select(Host.id, Host.name, Host.availability_zone, Host.management_url).order_by(
                Host.name
            )
        ).all()
    groups = (target_group(*row) for row in rows)
    return [group for group in groups if group is not None]
