"""A load balancer's top talkers: every instance's stick table, asked at once, merged.

The instances of a pair share their protection table (HAProxy peers), so the same
source shows on both: merged, each counter is the larger of the two (never their
sum, which would count a source twice), and a source is limited if either instance
limits it. An agent that does not answer costs `AGENT_TIMEOUT` and is named in
`errors`; the others still answer.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from openha.domain.protection import RATE_PERIOD_S
from openha.models import Host, Instance, LoadBalancer
from openha.providers.haproxy import agent_client
from openha.providers.haproxy.agent_client import AgentAddress, AgentError
from openha.settings import Settings

AGENT_TIMEOUT = 2.0
COUNTERS = (
    "connections",
    "connection_rate",
    "request_rate",
    "error_rate",
    "limited_total",
    "limited_rate",
)


def merge(answers: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """One row per source across the instances' answers, the busiest first."""
    by_source: dict[str, dict[str, Any]] = {}
    for answer in answers:
        for entry in answer.get("sources", []):
            source = str(entry.get("source"))
            row = by_source.setdefault(
                source, {"source": source, **dict.fromkeys(COUNTERS, 0), "limited": False}
            )
            for name in COUNTERS:
                row[name] = max(row[name], int(entry.get(name, 0)))
            row["limited"] = row["limited"] or bool(entry.get("limited"))
    rows = sorted(
        by_source.values(),
        key=lambda e: (-e["request_rate"], -e["connection_rate"], -e["connections"], e["source"]),
    )
    return rows[:limit]


def gather(session: Session, settings: Settings, lb: LoadBalancer, limit: int) -> dict[str, Any]:
    rows = session.execute(
        select(Instance.id, Host.management_url, Host.agent_secret)
        .outerjoin(Host, Instance.host_id == Host.id)
        .where(Instance.load_balancer_id == lb.id)
        .order_by(Instance.id)
    ).all()
    # Asked after the request's transaction: agents may take their deadline.
    session.rollback()
    targets: list[tuple[str, AgentAddress | None]] = [
        (
            inst_id,
            agent_client.address(settings, url, secret) if url and secret is not None else None,
        )
        for inst_id, url, secret in rows
    ]

    def ask(target: tuple[str, AgentAddress | None]) -> tuple[str, dict[str, Any] | str]:
        inst_id, agent = target
        if agent is None:
            return inst_id, "the instance has no host"
        try:
            return inst_id, agent_client.get_top_talkers(agent, inst_id, limit, AGENT_TIMEOUT)
        except AgentError as exc:
            return inst_id, str(exc)

    answers: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    instances: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
        for inst_id, found in pool.map(ask, targets):
            if isinstance(found, str):
                errors[inst_id] = found
                continue
            answers.append(found)
            instances.append(
                {
                    "instance_id": inst_id,
                    "protected": bool(found.get("protected")),
                    "tracked": found.get("tracked", 0),
                    # What the process compares with now, by the limits map's keys.
                    "limits": found.get("limits", {}),
                }
            )
    return {
        "load_balancer_id": lb.id,
        "rate_period": RATE_PERIOD_S,
        "sources": merge(answers, limit),
        "instances": instances,
        "errors": errors,
    }
