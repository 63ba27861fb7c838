"""/v2/lbaas/providers: the installed provider drivers, and the flavor and availability
zone capabilities each one accepts.

It also holds the checks flavor profiles and availability zone profiles share: the
provider must be installed, and the profile's data (a JSON object sent as a string,
as in Octavia) must parse and be accepted by that provider.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import APIRouter, Depends, Request

from openha.api.context import RequestContext, get_admin_context, get_context
from openha.api.errors import BadRequest, Conflict
from openha.api.query import requested_fields, select_fields
from openha.api.tenant import common
from openha.providers.base import Capability, Provider, UnsupportedOption

router = APIRouter(prefix="/lbaas/providers", tags=["providers"])


def enabled_provider(request: Request, name: str) -> Provider:
    """The installed provider called `name`, or Octavia's 400 when there is none."""
    registry = common.registry(request)
    if not registry.has(name):
        raise BadRequest(f"Provider '{name}' is not enabled.")
    return registry.get(name)


def parse_profile_data(raw: str, option: str) -> dict[str, Any]:
    """Decode a profile's `*_data` string; anything but a JSON object is a 400."""
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise BadRequest(f"{raw} is not a valid option for {option}")
    return data


def check_profile(
    request: Request,
    provider_name: str,
    raw: str,
    option: str,
    validate: Callable[[Provider], Callable[[Mapping[str, Any]], None]],
) -> None:
    """Refuse (400) profile data that does not parse or that the provider cannot honour."""
    data = parse_profile_data(raw, option)
    provider = enabled_provider(request, provider_name)
    try:
        validate(provider)(data)
    except UnsupportedOption as exc:
        raise BadRequest(str(exc)) from None


def update_profile(
    request: Request,
    profile: Any,
    changes: dict[str, Any],
    data_field: str,
    in_use: Callable[[], bool],
    label: str,
    validate: Callable[[Provider], Callable[[Mapping[str, Any]], None]],
) -> None:
    """Apply a flavor or availability zone profile update with Octavia's rules."""
    for key, value in changes.items():
        if value is None:
            raise BadRequest(f"None is not a valid option for {key}")
    if "provider_name" in changes or data_field in changes:
        # Profiles in use must keep meaning what they meant when LBs were built with them.
        if in_use():
            raise Conflict(f"{label} {profile.id} is in use and cannot be modified.")
        check_profile(
            request,
            changes.get("provider_name", profile.provider_name),
            changes.get(data_field, getattr(profile, data_field)),
            data_field,
            validate,
        )
    for key, value in changes.items():
        setattr(profile, key, value)


def _render(request: Request, items: list[dict[str, str]]) -> list[dict[str, str]]:
    fields = requested_fields(request)
    return [select_fields(item, fields) for item in items]


def _capabilities(request: Request, capabilities: list[Capability]) -> list[dict[str, str]]:
    # Octavia filters capabilities on exact name and description only.
    params = request.query_params
    items = [{"name": cap.name, "description": cap.description} for cap in capabilities]
    if name := params.get("name"):
        items = [i for i in items if i["name"] == name]
    if description := params.get("description"):
        items = [i for i in items if i["description"] == description]
    return _render(request, items)


@router.get("")
def list_providers(request: Request, ctx: RequestContext = Depends(get_context)) -> dict[str, Any]:
    registry = common.registry(request)
    items = [{"name": name, "description": registry.description(name)} for name in registry.names]
    return {"providers": _render(request, items)}


# Octavia's policy makes both capability lists admin-only.
@router.get("/{provider}/flavor_capabilities")
def flavor_capabilities(
    provider: str, request: Request, ctx: RequestContext = Depends(get_admin_context)
) -> dict[str, Any]:
    driver = enabled_provider(request, provider)
    return {"flavor_capabilities": _capabilities(request, driver.flavor_capabilities())}


@router.get("/{provider}/availability_zone_capabilities")
def availability_zone_capabilities(
    provider: str, request: Request, ctx: RequestContext = Depends(get_admin_context)
) -> dict[str, Any]:
    driver = enabled_provider(request, provider)
    return {
        "availability_zone_capabilities": _capabilities(
            request, driver.availability_zone_capabilities()
        )
    }
