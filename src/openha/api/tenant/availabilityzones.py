"""/v2/lbaas/availabilityzones and /v2/lbaas/availabilityzoneprofiles: where load
balancers may be placed.

An availability zone profile binds a provider to provider-specific settings
(`availability_zone_data`, a JSON object sent as a string, as in Octavia); an
availability zone is the name (also its key in URLs) tenants pick when they create a
load balancer. Profiles are admin-only; anyone may read zones, only admins change
them. Neither has a project, so they are read with plain selects.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from openha.api.context import RequestContext, get_admin_context, get_context, get_session
from openha.api.errors import BadRequest, Conflict, NotFound
from openha.api.query import list_collection, requested_fields, select_fields
from openha.api.tenant.common import StrictModel
from openha.api.tenant.providers import check_profile, update_profile
from openha.domain.grammar import FreeText
from openha.models import AvailabilityZone, AvailabilityZoneProfile, LoadBalancer

zones = APIRouter(prefix="/lbaas/availabilityzones", tags=["availabilityzones"])
profiles = APIRouter(prefix="/lbaas/availabilityzoneprofiles", tags=["availabilityzoneprofiles"])

ProviderName = Annotated[str, Field(max_length=255)]
ProfileData = Annotated[str, Field(max_length=4096)]
# The zone's name is its key in URLs: it cannot be empty.
ZoneName = Annotated[FreeText, Field(min_length=1)]

PROFILE_LABEL = "Availability Zone Profile"
ZONE_LABEL = "Availability Zone"


# --- availability zone profiles --------------------------------------------------------


class AvailabilityZoneProfileCreate(StrictModel):
    name: FreeText
    provider_name: ProviderName
    availability_zone_data: ProfileData


class AvailabilityZoneProfileCreateBody(StrictModel):
    availability_zone_profile: AvailabilityZoneProfileCreate


class AvailabilityZoneProfileUpdate(StrictModel):
    name: FreeText | None = None
    provider_name: ProviderName | None = None
    availability_zone_data: ProfileData | None = None


class AvailabilityZoneProfileUpdateBody(StrictModel):
    availability_zone_profile: AvailabilityZoneProfileUpdate


def serialize_profile(profile: AvailabilityZoneProfile) -> dict[str, Any]:
    return {
        "id": profile.id,
        "name": profile.name,
        "provider_name": profile.provider_name,
        "availability_zone_data": profile.availability_zone_data,
    }


def _get_profile(session: Session, profile_id: str) -> AvailabilityZoneProfile:
    profile = session.get(AvailabilityZoneProfile, profile_id)
    if profile is None:
        raise NotFound.resource(PROFILE_LABEL, profile_id)
    return profile


def _check_zone_data(request: Request, provider_name: str, raw: str) -> None:
    check_profile(
        request,
        provider_name,
        raw,
        "availability_zone_data",
        lambda p: p.validate_availability_zone,
    )


def _zones_using(session: Session, profile_id: str) -> int:
    count = session.scalar(
        select(func.count())
        .select_from(AvailabilityZone)
        .where(AvailabilityZone.availability_zone_profile_id == profile_id)
    )
    return count or 0


@profiles.get("")
def list_availability_zone_profiles(
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
) -> dict[str, Any]:
    out = list_collection(
        request,
        session,
        select(AvailabilityZoneProfile),
        AvailabilityZoneProfile,
        "availability_zone_profiles",
        serialize_profile,
    )
    # Octavia names this one's links in the singular.
    out["availability_zone_profile_links"] = out.pop("availability_zone_profiles_links")
    return out


@profiles.get("/{profile_id}")
def show_availability_zone_profile(
    profile_id: str,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
) -> dict[str, Any]:
    body = serialize_profile(_get_profile(session, profile_id))
    return {"availability_zone_profile": select_fields(body, requested_fields(request))}


@profiles.post("", status_code=201)
def create_availability_zone_profile(
    payload: AvailabilityZoneProfileCreateBody,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
) -> dict[str, Any]:
    body = payload.availability_zone_profile
    _check_zone_data(request, body.provider_name, body.availability_zone_data)
    profile = AvailabilityZoneProfile(
        name=body.name,
        provider_name=body.provider_name,
        availability_zone_data=body.availability_zone_data,
    )
    session.add(profile)
    session.commit()
    return {"availability_zone_profile": serialize_profile(profile)}


@profiles.put("/{profile_id}")
def update_availability_zone_profile(
    profile_id: str,
    payload: AvailabilityZoneProfileUpdateBody,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
) -> dict[str, Any]:
    profile = _get_profile(session, profile_id)
    update_profile(
        request,
        profile,
        payload.availability_zone_profile.model_dump(exclude_unset=True),
        "availability_zone_data",
        lambda: bool(_zones_using(session, profile_id)),
        PROFILE_LABEL,
        lambda p: p.validate_availability_zone,
    )
    session.commit()
    return {"availability_zone_profile": serialize_profile(profile)}


@profiles.delete("/{profile_id}", status_code=204)
def delete_availability_zone_profile(
    profile_id: str,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
) -> Response:
    profile = _get_profile(session, profile_id)
    if _zones_using(session, profile_id):
        raise Conflict(f"{PROFILE_LABEL} {profile_id} is in use and cannot be modified.")
    session.delete(profile)
    session.commit()
    return Response(status_code=204)


# --- availability zones ----------------------------------------------------------------


class AvailabilityZoneCreate(StrictModel):
    name: ZoneName
    description: FreeText | None = None
    enabled: bool = True
    availability_zone_profile_id: str


class AvailabilityZoneCreateBody(StrictModel):
    availability_zone: AvailabilityZoneCreate


class AvailabilityZoneUpdate(StrictModel):
    description: FreeText | None = None
    enabled: bool | None = None


class AvailabilityZoneUpdateBody(StrictModel):
    availability_zone: AvailabilityZoneUpdate


def serialize_zone(zone: AvailabilityZone) -> dict[str, Any]:
    return {
        "name": zone.name,
        "description": zone.description,
        "enabled": zone.enabled,
        "availability_zone_profile_id": zone.availability_zone_profile_id,
    }


def _get_zone(session: Session, name: str) -> AvailabilityZone:
    zone = session.get(AvailabilityZone, name)
    if zone is None:
        raise NotFound.resource(ZONE_LABEL, name)
    return zone


@zones.get("")
def list_availability_zones(
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    return list_collection(
        request,
        session,
        select(AvailabilityZone),
        AvailabilityZone,
        "availability_zones",
        serialize_zone,
    )


@zones.get("/{name}")
def show_availability_zone(
    name: str,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    body = serialize_zone(_get_zone(session, name))
    return {"availability_zone": select_fields(body, requested_fields(request))}


@zones.post("", status_code=201)
def create_availability_zone(
    payload: AvailabilityZoneCreateBody,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
) -> dict[str, Any]:
    body = payload.availability_zone
    profile_id = body.availability_zone_profile_id
    if session.get(AvailabilityZoneProfile, profile_id) is None:
        raise BadRequest(f"{profile_id} is not a valid option for availability_zone_profile_id")
    if session.get(AvailabilityZone, body.name) is not None:
        raise Conflict(f"A availability zone of {body.name} already exists.")
    zone = AvailabilityZone(
        name=body.name,
        description=body.description or "",
        enabled=body.enabled,
        availability_zone_profile_id=profile_id,
    )
    session.add(zone)
    session.commit()
    return {"availability_zone": serialize_zone(zone)}


@zones.put("/{name}")
def update_availability_zone(
    name: str,
    payload: AvailabilityZoneUpdateBody,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
) -> dict[str, Any]:
    zone = _get_zone(session, name)
    changes = payload.availability_zone.model_dump(exclude_unset=True)
    if "enabled" in changes and changes["enabled"] is None:
        raise BadRequest("None is not a valid option for enabled")
    if "description" in changes:
        changes["description"] = changes["description"] or ""
    for key, value in changes.items():
        setattr(zone, key, value)
    session.commit()
    return {"availability_zone": serialize_zone(zone)}


@zones.delete("/{name}", status_code=204)
def delete_availability_zone(
    name: str,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
) -> Response:
    zone = _get_zone(session, name)
    # Counted over every LB row, including ones being deleted: they still sit in the zone.
    in_use = session.scalar(
        select(func.count()).select_from(LoadBalancer).where(LoadBalancer.availability_zone == name)
    )
    if in_use:
        raise Conflict(f"{ZONE_LABEL} {name} is in use and cannot be modified.")
    session.delete(zone)
    session.commit()
    return Response(status_code=204)


# app.py mounts only `router`: it carries both collections.
router = APIRouter()
router.include_router(zones)
router.include_router(profiles)
