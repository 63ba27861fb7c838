"""POST /v2/manage/loadbalancers/{id}/migrate: move a load balancer to another host or zone.

Checked here, before anything is written: the target exists, is UP and enabled,
has room and does not run the LB already, and no other migration of the LB is
under way. The controller does the move (`openha.controller.migrate`); the answer
is the operation (202).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from openha.api import idempotency
from openha.api.context import RequestContext, get_admin_context, get_session
from openha.api.errors import BadRequest, Conflict, NotFound, quote_input
from openha.api.manage import operations
from openha.api.types import StrictModel
from openha.domain import constants as c
from openha.models import Host, Instance, LoadBalancer

router = APIRouter()


class MigrateBody(StrictModel):
    host: str | None = None  # id or name
    availability_zone: str | None = None


def check_host_can_take(session: Session, host: Host, lb_id: str) -> None:
    """409 unless `host` may get a new instance of the LB."""
    if host.status != c.HOST_UP:
        raise Conflict(f"Host {host.name} is {host.status}: it cannot take instances.")
    if host.admin_state != c.HOST_ENABLED:
        raise Conflict(f"Host {host.name} is {host.admin_state}: it takes no new instances.")
    count = session.scalar(select(func.count(Instance.id)).where(Instance.host_id == host.id))
    if (count or 0) >= host.effective_capacity:
        raise Conflict(f"Host {host.name} is full ({count} of {host.effective_capacity}).")
    here = session.scalar(
        select(func.count(Instance.id)).where(
            Instance.host_id == host.id, Instance.load_balancer_id == lb_id
        )
    )
    if here:
        raise Conflict(f"Load balancer {lb_id} already runs on host {host.name}.")


@router.post("/manage/loadbalancers/{lb_id}/migrate", status_code=202)
def migrate_loadbalancer(
    lb_id: str,
    body: MigrateBody,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
    keyed: idempotency.Guard | None = Depends(idempotency.guard),
) -> JSONResponse:
    if (body.host is None) == (body.availability_zone is None):
        raise BadRequest("Give exactly one of host or availability_zone.")
    lb = session.get(LoadBalancer, lb_id)
    if lb is None:
        raise NotFound(f"Load Balancer {lb_id} not found.")
    if lb.provisioning_status == c.PENDING_DELETE:
        raise Conflict(f"Load balancer {lb_id} is being deleted.")
    if not request.app.state.providers.get(lb.provider).can_migrate:
        raise BadRequest(f"Provider '{lb.provider}' cannot migrate load balancers.")
    running = operations.open_operation(session, "migrate", lb_id)
    if running is not None:
        raise Conflict(f"Load balancer {lb_id} is already being migrated (operation {running.id}).")
    params: dict[str, str] = {}
    if body.host is not None:
        host = session.scalar(select(Host).where(or_(Host.id == body.host, Host.name == body.host)))
        if host is None:
            raise BadRequest(f"Host {quote_input(body.host)} not found.")
        check_host_can_take(session, host, lb_id)
        params["host"] = host.id
    else:
        zone = body.availability_zone or ""
        hosts = list(session.scalars(select(Host).where(Host.availability_zone == zone)))
        if not hosts:
            raise BadRequest(f"No host in availability zone {quote_input(zone)}.")
        usable = []
        for host in hosts:
            try:
                check_host_can_take(session, host, lb_id)
            except Conflict:
                continue
            usable.append(host)
        if not usable:
            raise Conflict(f"No host in availability zone {zone} can take the load balancer.")
        params["availability_zone"] = zone
    if not session.scalar(
        select(func.count(Instance.id)).where(Instance.load_balancer_id == lb_id)
    ):
        raise Conflict(f"Load balancer {lb_id} has no instance yet: nothing to migrate.")
    op = operations.start(session, ctx, "migrate", "loadbalancer", lb_id, params)
    return operations.accepted(session, ctx, op, keyed)
