"""/v2/lbaas/flavors and /v2/lbaas/flavorprofiles: the operator's catalogue of load
balancer shapes.

A flavor profile binds a provider to provider-specific settings (`flavor_data`, a
JSON object sent as a string, as in Octavia); a flavor is the name tenants pick when
they create a load balancer. Profiles are admin-only; anyone may read flavors, only
admins change them. Neither has a project, so they are read with plain selects.
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
from openha.models import Flavor, FlavorProfile, LoadBalancer

flavors = APIRouter(prefix="/lbaas/flavors", tags=["flavors"])
profiles = APIRouter(prefix="/lbaas/flavorprofiles", tags=["flavorprofiles"])

ProviderName = Annotated[str, Field(max_length=255)]
ProfileData = Annotated[str, Field(max_length=4096)]


# --- flavor profiles -------------------------------------------------------------------


class FlavorProfileCreate(StrictModel):
    name: FreeText
    provider_name: ProviderName
    flavor_data: ProfileData


class FlavorProfileCreateBody(StrictModel):
    flavorprofile: FlavorProfileCreate


class FlavorProfileUpdate(StrictModel):
    name: FreeText | None = None
    provider_name: ProviderName | None = None
    flavor_data: ProfileData | None = None


class FlavorProfileUpdateBody(StrictModel):
    flavorprofile: FlavorProfileUpdate


def serialize_profile(profile: FlavorProfile) -> dict[str, Any]:
    return {
        "id": profile.id,
        "name": profile.name,
        "provider_name": profile.provider_name,
        "flavor_data": profile.flavor_data,
    }


def _get_profile(session: Session, profile_id: str) -> FlavorProfile:
    profile = session.get(FlavorProfile, profile_id)
    if profile is None:
        raise NotFound.resource("Flavor profile", profile_id)
    return profile


def _check_flavor_data(request: Request, provider_name: str, raw: str) -> None:
    check_profile(request, provider_name, raw, "flavor_data", lambda p: p.validate_flavor)


def _flavors_using(session: Session, profile_id: str) -> int:
    count = session.scalar(
        select(func.count()).select_from(Flavor).where(Flavor.flavor_profile_id == profile_id)
    )
    return count or 0


@profiles.get("")
def list_flavor_profiles(
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
) -> dict[str, Any]:
    out = list_collection(
        request, session, select(FlavorProfile), FlavorProfile, "flavorprofiles", serialize_profile
    )
    # Octavia names this one's links in the singular.
    out["flavorprofile_links"] = out.pop("flavorprofiles_links")
    return out


@profiles.get("/{profile_id}")
def show_flavor_profile(
    profile_id: str,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
) -> dict[str, Any]:
    profile = _get_profile(session, profile_id)
    return {"flavorprofile": select_fields(serialize_profile(profile), requested_fields(request))}


@profiles.post("", status_code=201)
def create_flavor_profile(
    payload: FlavorProfileCreateBody,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
) -> dict[str, Any]:
    body = payload.flavorprofile
    _check_flavor_data(request, body.provider_name, body.flavor_data)
    profile = FlavorProfile(
        name=body.name, provider_name=body.provider_name, flavor_data=body.flavor_data
    )
    session.add(profile)
    session.commit()
    return {"flavorprofile": serialize_profile(profile)}


@profiles.put("/{profile_id}")
def update_flavor_profile(
    profile_id: str,
    payload: FlavorProfileUpdateBody,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
) -> dict[str, Any]:
    profile = _get_profile(session, profile_id)
    update_profile(
        request,
        profile,
        payload.flavorprofile.model_dump(exclude_unset=True),
        "flavor_data",
        lambda: bool(_flavors_using(session, profile_id)),
        "Flavor profile",
        lambda p: p.validate_flavor,
    )
    session.commit()
    return {"flavorprofile": serialize_profile(profile)}


@profiles.delete("/{profile_id}", status_code=204)
def delete_flavor_profile(
    profile_id: str,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
) -> Response:
    profile = _get_profile(session, profile_id)
    if _flavors_using(session, profile_id):
        raise Conflict(f"Flavor profile {profile_id} is in use and cannot be modified.")
    session.delete(profile)
    session.commit()
    return Response(status_code=204)


# --- flavors ---------------------------------------------------------------------------


class FlavorCreate(StrictModel):
    name: FreeText
    description: FreeText | None = None
    enabled: bool = True
    flavor_profile_id: str


class FlavorCreateBody(StrictModel):
    flavor: FlavorCreate


class FlavorUpdate(StrictModel):
    name: FreeText | None = None
    description: FreeText | None = None
    enabled: bool | None = None


class FlavorUpdateBody(StrictModel):
    flavor: FlavorUpdate


def serialize_flavor(flavor: Flavor) -> dict[str, Any]:
    return {
        "id": flavor.id,
        "name": flavor.name,
        "description": flavor.description,
        "enabled": flavor.enabled,
        "flavor_profile_id": flavor.flavor_profile_id,
    }


def _get_flavor(session: Session, flavor_id: str) -> Flavor:
    flavor = session.get(Flavor, flavor_id)
    if flavor is None:
        raise NotFound.resource("Flavor", flavor_id)
    return flavor


def _refuse_duplicate_name(session: Session, name: str, flavor_id: str | None = None) -> None:
    stmt = select(Flavor.id).where(Flavor.name == name)
    if flavor_id is not None:
        stmt = stmt.where(Flavor.id != flavor_id)
    if session.scalar(stmt) is not None:
        raise Conflict(f"A flavor of {name} already exists.")


@flavors.get("")
def list_flavors(
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    return list_collection(request, session, select(Flavor), Flavor, "flavors", serialize_flavor)


@flavors.get("/{flavor_id}")
def show_flavor(
    flavor_id: str,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    flavor = _get_flavor(session, flavor_id)
    return {"flavor": select_fields(serialize_flavor(flavor), requested_fields(request))}


@flavors.post("", status_code=201)
def create_flavor(
    payload: FlavorCreateBody,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
) -> dict[str, Any]:
    body = payload.flavor
    if session.get(FlavorProfile, body.flavor_profile_id) is None:
        raise BadRequest(f"{body.flavor_profile_id} is not a valid option for flavor_profile_id")
    _refuse_duplicate_name(session, body.name)
    flavor = Flavor(
        name=body.name,
        description=body.description or "",
        enabled=body.enabled,
        flavor_profile_id=body.flavor_profile_id,
    )
    session.add(flavor)
    session.commit()
    return {"flavor": serialize_flavor(flavor)}


@flavors.put("/{flavor_id}")
def update_flavor(
    flavor_id: str,
    payload: FlavorUpdateBody,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
) -> dict[str, Any]:
    flavor = _get_flavor(session, flavor_id)
    changes = payload.flavor.model_dump(exclude_unset=True)
    for key in ("name", "enabled"):
        if key in changes and changes[key] is None:
            raise BadRequest(f"None is not a valid option for {key}")
    if "description" in changes:
        changes["description"] = changes["description"] or ""
    if "name" in changes:
        _refuse_duplicate_name(session, changes["name"], flavor_id)
    for key, value in changes.items():
        setattr(flavor, key, value)
    session.commit()
    return {"flavor": serialize_flavor(flavor)}


@flavors.delete("/{flavor_id}", status_code=204)
def delete_flavor(
    flavor_id: str,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_admin_context),
) -> Response:
    flavor = _get_flavor(session, flavor_id)
    # Every LB row still references it, including ones being deleted (the foreign key
    # holds until the controller removes them).
    in_use = session.scalar(
        select(func.count()).select_from(LoadBalancer).where(LoadBalancer.flavor_id == flavor_id)
    )
    if in_use:
        raise Conflict(f"Flavor {flavor_id} is in use and cannot be modified.")
    session.delete(flavor)
    session.commit()
    return Response(status_code=204)


# app.py mounts only `router`: it carries both collections.
router = APIRouter()
router.include_router(flavors)
router.include_router(profiles)
