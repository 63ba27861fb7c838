"""/v2/octavia/amphorae: Octavia's admin view of data planes, mapped onto OpenHA instances.

An amphora is an instance here: `compute_id` is the host, `vrrp_ip` the
instance's own address, `ha_ip` the VIP. Failover marks the instance and lets
the controller rebuild it (the VIP moves first for a pair).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Response
from pydantic import AliasPath, BeforeValidator, Field, computed_field
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from openha import events
from openha.api.context import RequestContext, get_admin_context, get_session
from openha.api.resources import Resource
from openha.api.tenant import changes
from openha.api.views import Timestamp, View
from openha.domain import constants as c
from openha.models import Instance, utcnow

# Instance status -> Octavia's amphora status.
AMPHORA_ALLOCATED = "ALLOCATED"
_STATUS = {
    c.INSTANCE_ALLOCATED: AMPHORA_ALLOCATED,
    c.INSTANCE_ACTIVE: AMPHORA_ALLOCATED,
    c.INSTANCE_ERROR: c.ERROR,
    c.INSTANCE_PENDING_FAILOVER: c.PENDING_UPDATE,
}


def _amphora_status(status: str) -> str:
    return _STATUS.get(status, status)


class AmphoraView(View):
    id: str
    loadbalancer_id: str = Field(validation_alias="load_balancer_id")
    compute_id: str | None = Field(validation_alias="host_id")
    compute_flavor: None = None
    image_id: None = None
    lb_network_ip: str | None = Field(None, validation_alias=AliasPath("host", "management_url"))
    vrrp_ip: str | None = Field(validation_alias="ip_address")
    ha_ip: str | None = Field(None, validation_alias=AliasPath("load_balancer", "vip_address"))
    vrrp_port_id: str | None = Field(validation_alias="port_id")
    ha_port_id: str | None = Field(None, validation_alias=AliasPath("load_balancer", "vip_port_id"))
    cert_expiration: None = None
    cert_busy: bool = False
    role: str
    status: Annotated[str, BeforeValidator(_amphora_status)]
    vrrp_id: int | None = Field(None, validation_alias=AliasPath("vrrp_router", "vrid"))
    vrrp_state: str | None = Field(None, validation_alias=AliasPath("health", "vrrp_state"))
    cached_zone: str | None = Field(None, validation_alias=AliasPath("host", "availability_zone"))
    created_at: Timestamp
    updated_at: Timestamp

    @computed_field  # type: ignore[prop-decorator]
    @property
    def vrrp_interface(self) -> str | None:
        return "eth0" if self.vrrp_id else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def vrrp_priority(self) -> int | None:
        if self.role == c.ROLE_MASTER:
            return 100
        return 90 if self.vrrp_id else None


AMPHORAE: Resource[Instance] = Resource(
    model=Instance,
    path="/octavia/amphorae",
    singular="amphora",
    plural="amphorae",
    label="Amphora",
    view=AmphoraView,
    scope=lambda ctx: select(Instance),
    aliases={"loadbalancer_id": Instance.load_balancer_id, "compute_id": Instance.host_id},
    options=(
        selectinload(Instance.load_balancer),
        selectinload(Instance.host),
        selectinload(Instance.vrrp_router),
    ),
    reader=get_admin_context,
)
router = AMPHORAE.router()


@router.get("/{amphora_id}/stats")
def amphora_stats(
    amphora_id: str,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
) -> dict[str, Any]:
    inst = AMPHORAE.find(session, ctx, amphora_id)
    rows = []
    for listener_id, counters in ((inst.health or {}).get("listeners") or {}).items():
        rows.append(
            {
                "id": inst.id,
                "loadbalancer_id": inst.load_balancer_id,
                "listener_id": listener_id,
                **counters,
            }
        )
    return {"amphora_stats": rows}


@router.put("/{amphora_id}/failover", status_code=202, response_class=Response)
def failover_amphora(
    amphora_id: str,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
) -> Response:
    # A change of its LB like any other (Octavia marks the LB PENDING_UPDATE too): locked
    # first, then the instance read again, as a failover may have replaced it meanwhile.
    change = changes.begin(session, ctx, AMPHORAE.find(session, ctx, amphora_id).load_balancer_id)
    inst = AMPHORAE.find(session, ctx, amphora_id, fresh=True)
    inst.status = c.INSTANCE_PENDING_FAILOVER
    inst.failover_requested_at = utcnow()
    change.request_failover()
    events.emit(
        session,
        "instance.failover_requested",
        f"Failover of instance {inst.id} requested by an admin",
        lb=change.lb,
        instance_id=inst.id,
        host_id=inst.host_id,
    )
    session.commit()
    return Response(status_code=202)


@router.put("/{amphora_id}/config", status_code=202, response_class=Response)
def configure_amphora(
    amphora_id: str,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
) -> Response:
    """Re-push the instance's configuration (Octavia: refresh the amphora agent config)."""
    inst = AMPHORAE.find(session, ctx, amphora_id)
    inst.applied_generation = 0  # lagging: the pass pushes it again
    inst.load_balancer.reconcile_requested = True  # now, not at the next resync
    session.commit()
    return Response(status_code=202)
