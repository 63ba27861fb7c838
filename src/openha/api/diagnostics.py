"""A load balancer's diagnostics, gathered live from the agents of its instances.

Shared by the operator route (`/v2/manage/loadbalancers/{id}/diagnostics`, all of
it) and the tenant one (`/v2/lbaas/loadbalancers/{id}/diagnostics`, the subset about
the tenant's own objects: member check results and the probe, nothing about hosts or
configs); who may see which load balancer is decided before this module is called.

Every instance's agent is asked at once through the controller's agent client, with
a short deadline: an agent that does not answer costs that deadline, never more, and
its instance is answered from what the database last heard (its heartbeat), marked so.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from openha.api.errors import BadRequest
from openha.models import Host, Instance, LoadBalancer
from openha.providers.haproxy import agent_client
from openha.providers.haproxy.agent_client import AgentAddress, AgentError
from openha.settings import Settings

AGENT_TIMEOUT = 1.5  # an agent answers in tens of milliseconds; a probe in under one second
PROBE_TIMEOUT = 3.0

# What a tenant sees of a server's row from HAProxy (check results, sessions).
TENANT_SERVER_FIELDS = (
    "status",
    "weight",
    "check_status",
    "check_code",
    "check_duration",
    "check_desc",
    "last_chk",
    "lastchg",
    "downtime",
    "chkfail",
    "chkdown",
    "scur",
    "slim",
)


def probe_param(probe: str | None) -> bool:
    """`?probe=members` asks for the active probe; nothing else is a valid value."""
    if probe in (None, ""):
        return False
    if probe != "members":
        raise BadRequest("probe must be 'members'.")
    return True


@dataclass(frozen=True)
class _Target:
    """One instance, as the database knows it, and how to reach its agent."""

    instance: dict[str, Any]
    host: dict[str, Any] | None
    agent: AgentAddress | None
    heartbeat: dict[str, Any]


def _when(value: datetime | None) -> str | None:
    return value.isoformat() + "Z" if value is not None else None


def _targets(session: Session, settings: Settings, lb_id: str) -> list[_Target]:
    rows = session.execute(
        select(Instance, Host)
        .outerjoin(Host, Instance.host_id == Host.id)
        .where(Instance.load_balancer_id == lb_id)
        .order_by(Instance.role, Instance.id)
    ).all()
    targets = []
    for inst, host in rows:
        agent = (
            agent_client.address(settings, host.management_url, host.agent_secret)
            if host is not None and host.management_url
            else None
        )
        targets.append(
            _Target(
                instance={
                    "instance_id": inst.id,
                    "role": inst.role,
                    "status": inst.status,
                    "ip_address": inst.ip_address,
                    "vrrp_priority": inst.vrrp_priority,
                    "applied_generation": inst.applied_generation,
                    "last_error": inst.last_error,
                },
                host=(
                    {
                        "id": host.id,
                        "name": host.name,
                        "status": host.status,
                        "admin_state": host.admin_state,
                        "last_heartbeat_at": _when(host.last_heartbeat_at),
                    }
                    if host is not None
                    else None
                ),
                agent=agent,
                heartbeat=dict(inst.health or {}),
            )
        )
    return targets


def _ask(target: _Target, probe: bool) -> tuple[dict[str, Any] | None, str | None]:
    if target.agent is None:
        return None, "the instance has no host (not placed yet, or its host is gone)"
    try:
        return agent_client.get_diagnostics(
            target.agent,
            str(target.instance["instance_id"]),
            probe,
            PROBE_TIMEOUT if probe else AGENT_TIMEOUT,
        ), None
    except AgentError as exc:
        return None, str(exc)


def _instance_answer(
    target: _Target, live: dict[str, Any] | None, error: str | None
) -> dict[str, Any]:
    answer: dict[str, Any] = {**target.instance, "host": target.host, "reachable": live is not None}
    if live is not None:
        answer["live"] = live
    else:
        answer["error"] = error
        # What the database last heard: the heartbeat's status of this instance.
        answer["fallback"] = {
            "source": "last heartbeat",
            "heartbeat_at": target.host["last_heartbeat_at"] if target.host else None,
            "status": target.heartbeat,
        }
    return answer


def gather(session: Session, settings: Settings, lb: LoadBalancer, probe: bool) -> dict[str, Any]:
    """The operator's answer: the LB, and every instance live or from its last heartbeat."""
    started = time.monotonic()
    summary = {
        "id": lb.id,
        "name": lb.name,
        "project_id": lb.project_id,
        "provisioning_status": lb.provisioning_status,
        "operating_status": lb.operating_status,
        "desired_generation": lb.desired_generation,
        "applied_generation": lb.applied_generation,
        "vip_address": lb.vip_address,
    }
    targets = _targets(session, settings, lb.id)
    session.rollback()  # no read transaction held while agents are asked
    if len(targets) > 1:
        with ThreadPoolExecutor(max_workers=len(targets)) as pool:
            answers = list(pool.map(lambda t: _ask(t, probe), targets))
    else:
        answers = [_ask(t, probe) for t in targets]
    instances = [
        _instance_answer(t, live, err) for t, (live, err) in zip(targets, answers, strict=True)
    ]
    return {
        "diagnostics": {
            "loadbalancer": summary,
            "instances": instances,
            "probe": probe,
            "gathered_ms": round((time.monotonic() - started) * 1000, 1),
        }
    }


def _tenant_instance(answer: dict[str, Any]) -> dict[str, Any]:
    """What a tenant may see of one instance: its members' checks and the probe."""
    out: dict[str, Any] = {"role": answer["role"], "reachable": answer["reachable"]}
    live = answer.get("live")
    if live is None:
        fallback = answer["fallback"]
        out["fallback"] = {
            "source": fallback["source"],
            "heartbeat_at": fallback["heartbeat_at"],
            "members": dict(fallback["status"].get("members") or {}),
            "pools": dict(fallback["status"].get("pools") or {}),
        }
        return out
    runtime = live.get("runtime") or {}
    out["pools"] = {
        pool_id: {"status": row.get("status"), "active_members": row.get("act")}
        for pool_id, row in (runtime.get("backends") or {}).items()
    }
    out["members"] = [
        {"pool_id": row["backend"], "member_id": row["id"]}
        | {k: row.get(k) for k in TENANT_SERVER_FIELDS}
        for row in runtime.get("servers") or []
    ]
    if "error" in runtime:
        out["members_error"] = "the load balancer's HAProxy did not answer"
    if "probe" in live:
        out["probe"] = live["probe"]
    return out


def tenant_subset(full: dict[str, Any]) -> dict[str, Any]:
    """The tenant's answer, cut from the operator's (hosts, configs and processes left out)."""
    diag = full["diagnostics"]
    lb = diag["loadbalancer"]
    return {
        "diagnostics": {
            "loadbalancer": {
                k: lb[k] for k in ("id", "name", "provisioning_status", "operating_status")
            },
            "instances": [_tenant_instance(a) for a in diag["instances"]],
            "probe": diag["probe"],
            "gathered_ms": diag["gathered_ms"],
        }
    }
