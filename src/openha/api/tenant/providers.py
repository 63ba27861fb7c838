"""/v2/lbaas/providers: the installed provider drivers, and the flavor and availability
zone capabilities each one accepts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from openha.api import openapi
from openha.api.context import RequestContext, get_admin_context, get_context
from openha.api.errors import BadRequest
from openha.api.query import requested_fields, select_fields
from openha.api.tenant import common
from openha.providers.base import Capability, Provider

router = APIRouter(prefix="/providers", tags=["providers"])


def enabled_provider(request: Request, name: str) -> Provider:
    """The installed provider called `name`, or Octavia's 400 when there is none."""
    registry = common.registry(request)
    if not registry.has(name):
        raise BadRequest(f"Provider '{name}' is not enabled.")
    return registry.get(name)


CAPABILITY_QUERY = [
    openapi.FIELDS,
    *(openapi.query_parameter(name, "Exact match") for name in ("name", "description")),
]


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


@router.get("", openapi_extra={"parameters": [openapi.FIELDS]})
def list_providers(request: Request, ctx: RequestContext = Depends(get_context)) -> dict[str, Any]:
    registry = common.registry(request)
    items = [{"name": name, "description": registry.description(name)} for name in registry.names]
    return {"providers": _render(request, items)}


# Octavia's policy makes both capability lists admin-only.
@router.get("/{provider}/flavor_capabilities", openapi_extra={"parameters": CAPABILITY_QUERY})
def flavor_capabilities(
    provider: str, request: Request, ctx: RequestContext = Depends(get_admin_context)
) -> dict[str, Any]:
    driver = enabled_provider(request, provider)
    return {"flavor_capabilities": _capabilities(request, driver.flavor_capabilities())}


@router.get(
    "/{provider}/availability_zone_capabilities",
    openapi_extra={"parameters": CAPABILITY_QUERY},
)
def availability_zone_capabilities(
    provider: str, request: Request, ctx: RequestContext = Depends(get_admin_context)
) -> dict[str, Any]:
    driver = enabled_provider(request, provider)
    return {
        "availability_zone_capabilities": _capabilities(
            request, driver.availability_zone_capabilities()
        )
    }
