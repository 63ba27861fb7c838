"""/v2/manage/protection-profiles and an LB's protection: profiles, override, under-attack mode.

- `/v2/manage/protection-profiles`: CRUD of named profiles (`openha.domain.protection`).
  A profile in use (by a flavor profile's `protection_profile`, an LB's override or
  its under-attack mode) cannot be deleted (409 naming its users,
  `openha.api.protectionrefs`); a change to one is pushed to every load balancer
  using it.
- `GET|PUT /v2/manage/loadbalancers/{id}/protection`: what applies to an LB, and an
  operator's profile for it instead of its flavor's (`{"profile": null}` goes back).
- `POST|DELETE /v2/manage/loadbalancers/{id}/protect`: under-attack mode. The
  profile's runtime fields go to the instances' maps through the runtime API (no
  reload) while the configuration keeps the base profile's; both are events. The
  mode is desired state: a reconcile after any restart applies it again.
- `GET /v2/manage/loadbalancers/{id}/top-talkers`: the sources with the highest rates,
  from every instance's stick table, merged (`openha.api.toptalkers`).

The answers hold no secret; a profile's settings reach HAProxy only as checked
numbers, normalised CIDRs and grammar-checked path prefixes.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from openha import events
from openha.api import idempotency, protectionrefs, toptalkers
from openha.api.context import RequestContext, get_admin_context, get_session
from openha.api.errors import BadRequest, Conflict, NotFound
from openha.api.resources import Resource
from openha.api.tenant import changes
from openha.api.views import Timestamp, View
from openha.controller.snapshot import (
    flavor_data,
    profile_named,
    protection_of,
)
from openha.domain import constants as c
from openha.domain.grammar import FreeText
from openha.domain.protection import (
    RATE_PERIOD_S,
    RUNTIME_FIELDS,
    STATIC_FIELDS,
    ProfileName,
    ProtectionSettings,
)
from openha.models import LoadBalancer, ProtectionProfile, utcnow

LABEL = "Protection Profile"
LB_LABEL = "Load Balancer"


class ProtectionProfileView(View, ProtectionSettings):
    """A profile as the API answers it: its settings flat beside its name."""

    model_config = ConfigDict(from_attributes=True, frozen=True, extra="ignore", strict=False)

    id: str
    name: str
    description: str
    rate_period: int = RATE_PERIOD_S
    created_at: Timestamp
    updated_at: Timestamp

    @model_validator(mode="before")
    @classmethod
    def _flatten(cls, row: Any) -> Any:
        if not isinstance(row, ProtectionProfile):
            return row
        return {
            **row.settings,
            "id": row.id,
            "name": row.name,
            "description": row.description,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
        }


PROFILES: Resource[ProtectionProfile] = Resource(
    model=ProtectionProfile,
    path="/protection-profiles",
    unknown_filters="ignore",
    singular="protection_profile",
    plural="protection_profiles",
    label=LABEL,
    view=ProtectionProfileView,
    scope=lambda ctx: select(ProtectionProfile),
    reader=get_admin_context,
    writer=get_admin_context,
)
profiles = PROFILES.router()
router = APIRouter(prefix="/manage", tags=["manage"])
router.include_router(profiles, prefix="")


class ProfileFields(ProtectionSettings):
    """A profile as a client writes it: its name, a description and its settings."""

    name: ProfileName
    description: FreeText = ""


class ProfileBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    protection_profile: ProfileFields


class ProfileUpdateBody(BaseModel):
    """Only the fields given change; the result is checked as a whole."""

    model_config = ConfigDict(extra="forbid")
    protection_profile: dict[str, Any]


class ProfileRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    profile: ProfileName | None = Field(description="A profile's name or id; null: the flavor's")


class ProtectBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    profile: ProfileName = Field(description="The under-attack profile's name or id")


def _when(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def profile_view(profile: ProtectionProfile) -> dict[str, Any]:
    return ProtectionProfileView.render_json(profile)


def lb_protection_view(session: Session, lb: LoadBalancer) -> dict[str, Any]:
    """What protects `lb`: its base profile and where it comes from, under-attack mode."""
    found = protection_of(session, lb, flavor_data(session, lb))
    config, runtime = found.settings()
    return {
        "load_balancer_id": lb.id,
        "profile": profile_view(found.profile) if found.profile else None,
        "source": found.source,
        "under_attack": found.under_attack is not None,
        "under_attack_profile": profile_view(found.under_attack) if found.under_attack else None,
        "under_attack_since": _when(lb.under_attack_since),
        # What the instances enforce now: the runtime fields from the maps' profile,
        # the static ones from the configuration's.
        "effective": (
            {
                **config.model_dump(include=set(STATIC_FIELDS)),
                **runtime.model_dump(include=set(RUNTIME_FIELDS)),
                "rate_period": RATE_PERIOD_S,
            }
            if config is not None and runtime is not None
            else None
        ),
    }


def _profile(session: Session, profile_id: str) -> ProtectionProfile:
    found = session.get(ProtectionProfile, profile_id)
    if found is None:
        raise NotFound.resource(LABEL, profile_id)
    return found


def _referenced(session: Session, ref: str) -> ProtectionProfile:
    found = profile_named(session, ref)
    if found is None:
        raise BadRequest(f"{LABEL} {ref} does not exist.")
    return found


def _name_free(session: Session, name: str, but: str | None = None) -> None:
    clash = session.scalar(select(ProtectionProfile.id).where(ProtectionProfile.name == name))
    if clash is not None and clash != but:
        raise Conflict(f"A {LABEL} named {name} already exists.")


# --- profiles ------------------------------------------------------------------------------


@router.post("/protection-profiles", status_code=201)
def create_profile(
    body: ProfileBody,
    session: Session = Depends(get_session),
    _ctx: RequestContext = Depends(get_admin_context),
    keyed: idempotency.Guard | None = Depends(idempotency.guard),
) -> dict[str, Any]:
    fields = body.protection_profile
    _name_free(session, fields.name)
    settings = ProtectionSettings.model_validate(fields.model_dump(exclude={"name", "description"}))
    profile = ProtectionProfile(
        name=fields.name, description=fields.description, settings=settings.model_dump()
    )
    session.add(profile)
    session.flush()
    answer = {"protection_profile": profile_view(profile)}
    idempotency.commit(session, keyed, answer)
    return answer


@router.put("/protection-profiles/{profile_id}")
def update_profile(
    profile_id: str,
    body: ProfileUpdateBody,
    session: Session = Depends(get_session),
    _ctx: RequestContext = Depends(get_admin_context),
) -> dict[str, Any]:
    profile = _profile(session, profile_id)
    merged = {
        "name": profile.name,
        "description": profile.description,
        **profile.settings,
        **body.protection_profile,
    }
    fields = ProfileFields.model_validate(merged)  # a refusal is a 400, nothing changed
    _name_free(session, fields.name, but=profile.id)
    old_name = profile.name
    # Before a rename: flavor data names it by its old name.
    users = protectionrefs.applies_to(session, profile)
    if fields.name != old_name:
        naming = protectionrefs.flavor_profiles_naming(session, {old_name})
        if naming:
            raise Conflict(
                f"{LABEL} {old_name} is named by flavor profiles {', '.join(naming)}: "
                "change their flavor_data before renaming it."
            )
    profile.name = fields.name
    profile.description = fields.description
    profile.settings = ProtectionSettings.model_validate(
        fields.model_dump(exclude={"name", "description"})
    ).model_dump()
    changes.reapply(session, users)
    session.commit()
    return {"protection_profile": profile_view(profile)}


@router.delete("/protection-profiles/{profile_id}", status_code=204)
def delete_profile(
    profile_id: str,
    session: Session = Depends(get_session),
    _ctx: RequestContext = Depends(get_admin_context),
) -> Response:
    profile = session.get(ProtectionProfile, profile_id)
    if profile is None:
        raise NotFound.resource(LABEL, profile_id)
    users = protectionrefs.users(session, profile)
    if users:
        raise Conflict(f"{LABEL} {profile_id} is in use by {users.describe()}.")
    session.delete(profile)
    session.commit()
    return Response(status_code=204)


# --- one load balancer ---------------------------------------------------------------------


def _locked_lb(session: Session, ctx: RequestContext, lb_id: str) -> LoadBalancer:
    lb = changes.lock(session, ctx, lb_id)
    changes.refuse_if_deleting(lb, LB_LABEL)
    return lb


def _push(session: Session, lb: LoadBalancer) -> None:
    """A new generation for `lb`, tried at once; its statuses stay as they are."""
    session.flush()
    changes.reapply(session, LoadBalancer.id == lb.id)


@router.get("/loadbalancers/{lb_id}/protection")
def show_lb_protection(
    lb_id: str,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
) -> dict[str, Any]:
    lb = ctx.get(session, LoadBalancer, lb_id, LB_LABEL)
    return {"protection": lb_protection_view(session, lb)}


@router.put("/loadbalancers/{lb_id}/protection")
def set_lb_protection(
    lb_id: str,
    body: ProfileRef,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
) -> dict[str, Any]:
    """An operator's profile for this LB instead of its flavor's; null: the flavor's again."""
    lb = _locked_lb(session, ctx, lb_id)
    profile = _referenced(session, body.profile) if body.profile is not None else None
    new_id = profile.id if profile is not None else None
    if new_id != lb.protection_profile_id:
        lb.protection_profile_id = new_id
        _push(session, lb)
        events.emit(
            session,
            "loadbalancer.protection_changed",
            f"Protection of load balancer {lb.id}: "
            + (f"profile {profile.name}" if profile else "the flavor's profile"),
            lb=lb,
            details={"profile_id": new_id},
        )
    view = lb_protection_view(session, lb)
    session.commit()
    return {"protection": view}


@router.post("/loadbalancers/{lb_id}/protect", status_code=202)
def protect(
    lb_id: str,
    body: ProtectBody,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
    keyed: idempotency.Guard | None = Depends(idempotency.guard),
) -> dict[str, Any]:
    """Under-attack mode: the profile's limits and lists replace the running ones."""
    lb = _locked_lb(session, ctx, lb_id)
    profile = _referenced(session, body.profile)
    if lb.under_attack_profile_id != profile.id:
        previous = lb.under_attack_profile_id
        lb.under_attack_profile_id = profile.id
        lb.under_attack_since = utcnow()
        _push(session, lb)
        events.emit(
            session,
            "loadbalancer.under_attack",
            f"Load balancer {lb.id} is under attack: profile {profile.name} applies",
            severity=c.SEVERITY_WARNING,
            lb=lb,
            details={"profile_id": profile.id, "previous_profile_id": previous},
        )
    answer = {"protection": lb_protection_view(session, lb)}
    idempotency.commit(session, keyed, answer)
    return answer


@router.delete("/loadbalancers/{lb_id}/protect")
def relax(
    lb_id: str,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
) -> dict[str, Any]:
    """Leave under-attack mode: the base profile's limits and lists again."""
    lb = _locked_lb(session, ctx, lb_id)
    if lb.under_attack_profile_id is not None:
        since = lb.under_attack_since
        lb.under_attack_profile_id = None
        lb.under_attack_since = None
        _push(session, lb)
        events.emit(
            session,
            "loadbalancer.under_attack_cleared",
            f"Load balancer {lb.id} left under-attack mode",
            lb=lb,
            details={"since": _when(since)},
        )
    view = lb_protection_view(session, lb)
    session.commit()
    return {"protection": view}


@router.get("/loadbalancers/{lb_id}/top-talkers")
def top_talkers(
    lb_id: str,
    request: Request,
    limit: int = Query(20, ge=1, le=1000),
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
) -> dict[str, Any]:
    """The sources with the highest request (then connection) rates, across the instances."""
    lb = ctx.get(session, LoadBalancer, lb_id, LB_LABEL)
    return toptalkers.gather(session, request.app.state.settings, lb, limit)
