"""/v2/agent/*: where agents register and heartbeat (authenticated by their host credential).

A heartbeat is the agent's truth about its instances: health, member states,
counters and the generation each runs. The answer tells the agent which
instances the controller still wants there, so a host that returns after being
declared dead removes what was rebuilt elsewhere.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from openha import events, hosts
from openha.agent.protocol import (
    HeartbeatReport,
    HeartbeatResponse,
    RegisterRequest,
    RegisterResponse,
)
from openha.api.context import get_session
from openha.api.errors import Forbidden, Unauthorized
from openha.domain import constants as c
from openha.domain.constants import HOST_UP
from openha.models import Host, Instance, LoadBalancer, utcnow_precise

router = APIRouter(prefix="/agent", tags=["agent"])


def agent_host(request: Request, session: Session = Depends(get_session)) -> Host:
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret:
        raise Unauthorized("Agents authenticate with their host credential (Bearer).")
    host = hosts.authenticate(session, secret)
    if host is None:
        raise Unauthorized("Unknown host credential.")
    return host


def _mark_alive(session: Session, host: Host) -> None:
    if host.status != HOST_UP:
        events.emit(
            session, "host.up", f"Host {host.name} is up (was {host.status})", host_id=host.id
        )
        # LBs waiting for capacity should not sit out their backoff: retry them now.
        session.execute(
            update(LoadBalancer)
            .where(LoadBalancer.provisioning_status == c.ERROR)
            .values(next_attempt_at=None)
            .execution_options(synchronize_session=False)
        )
    host.status = HOST_UP
    host.last_heartbeat_at = utcnow_precise()


@router.post("/register")
def register(
    body: RegisterRequest,
    session: Session = Depends(get_session),
    host: Host = Depends(agent_host),
) -> RegisterResponse:
    if body.name != host.name:
        raise Forbidden(f"This credential belongs to host {host.name}, not {body.name}.")
    host.management_url = body.management_url
    host.agent_secret = body.agent_secret
    host.capacity = body.capacity
    host.agent_version = body.version
    if body.availability_zone:
        host.availability_zone = body.availability_zone
    host.report = {**(host.report or {}), "agent_dir": body.agent_dir}
    _mark_alive(session, host)
    session.commit()
    return RegisterResponse(host_id=host.id)


@router.post("/heartbeat")
def heartbeat(
    report: HeartbeatReport,
    session: Session = Depends(get_session),
    host: Host = Depends(agent_host),
) -> HeartbeatResponse:
    _mark_alive(session, host)
    seen: set[str] = set()
    for status in report.instances:
        inst = session.get(Instance, status.instance_id)
        if inst is None or inst.host_id != host.id:
            continue
        seen.add(inst.id)
        health: dict[str, Any] = status.model_dump(mode="json")
        inst.health = health
        # The agent's word wins: a lower generation means it lost state and needs a re-push.
        inst.applied_generation = status.applied_generation
        if status.last_error:
            inst.last_error = status.last_error
    wanted = list(session.scalars(select(Instance).where(Instance.host_id == host.id)))
    for inst in wanted:
        if inst.id not in seen and inst.applied_generation > 0:
            inst.applied_generation = 0  # gone from the host: the controller rebuilds it
            inst.health = {}
    session.commit()
    return HeartbeatResponse(wanted_instance_ids=[i.id for i in wanted])
