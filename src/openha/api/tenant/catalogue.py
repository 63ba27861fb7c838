"""Flavors and availability zones: the operator's profile-backed catalogues, as Octavia's.

Both are the same shape, served twice from one description (`Catalogue`):
- a *profile* binds a provider to provider-specific settings, a JSON object sent as
  a string (`flavor_data`, `availability_zone_data`); profiles are admin-only, and
  one in use keeps meaning what it meant when load balancers were built with it;
- an *entry* (a flavor; an availability zone, whose name is its key) is what tenants
  pick when they create a load balancer; anyone reads entries, only admins change them.
Neither has a project. List, show and delete come from the resource table; create
and update are here, once for both catalogues.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, Depends, Request
from pydantic import BaseModel, Field, create_model
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from openha.api import idempotency, protectionrefs
from openha.api.context import RequestContext, get_admin_context, get_session
from openha.api.errors import BadRequest, Conflict
from openha.api.resources import Resource, removing
from openha.api.tenant.providers import enabled_provider
from openha.api.types import StrictModel, with_defaults
from openha.api.views import View
from openha.domain.grammar import FreeText
from openha.models import (
    AvailabilityZone,
    AvailabilityZoneProfile,
    Flavor,
    FlavorProfile,
    LoadBalancer,
)
from openha.providers.base import Provider, UnsupportedOption

ProviderName = Annotated[str, Field(max_length=255)]
ProfileData = Annotated[str, Field(max_length=4096)]
# The zone's name is its key in URLs: it cannot be empty.
ZoneName = Annotated[FreeText, Field(min_length=1)]
M = TypeVar("M", bound=BaseModel)
# Picks the provider's check of a profile's data (validate_flavor, ...).
DataCheck = Callable[[Provider], Callable[[Mapping[str, Any]], None]]
# Checks what a profile's data names in the database (raises BadRequest).
RefCheck = Callable[[Session, Mapping[str, Any]], None]


def parse_profile_data(raw: str, option: str) -> dict[str, Any]:
    """Decode a profile's `*_data` string; anything but a JSON object is a 400."""
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise BadRequest(f"{raw} is not a valid option for {option}")
    return data


@dataclass(frozen=True, kw_only=True)
class Catalogue:
    entry: type[Any]
    entry_path: str
    entry_singular: str
    entry_plural: str
    entry_label: str
    entry_name: Any  # the type of an entry's name
    keyed_by_name: bool  # the name is the key in URLs (and cannot change)
    profile: type[Any]
    profile_path: str
    profile_singular: str
    profile_plural: str
    profile_links: str
    profile_label: str
    profile_ref: str  # the entry's column naming its profile
    data: str  # the profile's column of provider-specific settings
    data_check: DataCheck
    refs_check: RefCheck | None = None  # whatever else than the provider the data names
    used_by: Callable[[Any], ColumnElement[bool]]  # the load balancers using an entry

    # --- rules ------------------------------------------------------------------------

    def check_data(self, request: Request, session: Session, provider_name: str, raw: str) -> None:
        """400 unless the data parses, the (installed) provider accepts it and what it
        names exists."""
        data = parse_profile_data(raw, self.data)
        provider = enabled_provider(request, provider_name)
        try:
            self.data_check(provider)(data)
        except UnsupportedOption as exc:
            raise BadRequest(str(exc)) from None
        if self.refs_check is not None:
            self.refs_check(session, data)

    def _entries_using(self, session: Session, profile: Any) -> int:
        column = getattr(self.entry, self.profile_ref)
        stmt = select(func.count()).select_from(self.entry).where(column == profile.id)
        return session.scalar(stmt) or 0

    def _refuse_profile_in_use(self, session: Session, profile: Any) -> None:
        if self._entries_using(session, profile):
            raise Conflict(f"{self.profile_label} {profile.id} is in use and cannot be modified.")

    def _refuse_entry_in_use(self, session: Session, entry: Any) -> None:
        # Counted over every LB row, including ones being deleted: they still hold it.
        stmt = select(func.count()).select_from(LoadBalancer).where(self.used_by(entry))
        if session.scalar(stmt):
            key = entry.name if self.keyed_by_name else entry.id
            raise Conflict(f"{self.entry_label} {key} is in use and cannot be modified.")

    def _refuse_duplicate(self, session: Session, name: str, current: Any = None) -> None:
        stmt = select(self.entry).where(self.entry.name == name)
        found = session.scalars(stmt).first()
        if found is not None and found is not current:
            raise Conflict(f"A {self.entry_label.lower()} of {name} already exists.")

    # --- routes -----------------------------------------------------------------------

    def router(self) -> APIRouter:
        def model(name: str, base: type[M], fields: dict[str, Any]) -> type[M]:
            return create_model(name, __base__=base, **fields)

        def envelope(name: str, key: str, fields: dict[str, Any]) -> type[StrictModel]:
            inner = model(name, StrictModel, fields)
            return model(f"{name}Body", StrictModel, {key: (inner, ...)})

        profile, entry = self.profile.__name__, self.entry.__name__
        entry_id: dict[str, Any] = {} if self.keyed_by_name else {"id": (str, ...)}
        profile_view = model(
            f"{profile}View",
            View,
            {
                "id": (str, ...),
                "name": (str, ...),
                "provider_name": (str, ...),
                self.data: (str, ...),
            },
        )
        profile_create = envelope(
            f"{profile}Create",
            self.profile_singular,
            {
                "name": (FreeText, ...),
                "provider_name": (ProviderName, ...),
                self.data: (ProfileData, ...),
            },
        )
        profile_update = envelope(
            f"{profile}Update",
            self.profile_singular,
            {
                "name": (FreeText | None, None),
                "provider_name": (ProviderName | None, None),
                self.data: (ProfileData | None, None),
            },
        )
        entry_view = model(
            f"{entry}View",
            View,
            {
                **entry_id,
                "name": (str, ...),
                "description": (str, ...),
                "enabled": (bool, ...),
                self.profile_ref: (str, ...),
            },
        )
        entry_create = envelope(
            f"{entry}Create",
            self.entry_singular,
            {
                "name": (self.entry_name, ...),
                "description": (FreeText | None, None),
                "enabled": (bool, True),
                self.profile_ref: (str, ...),
            },
        )
        # A name that is the key in URLs cannot change.
        entry_name: dict[str, Any] = {} if self.keyed_by_name else {"name": (FreeText | None, None)}
        entry_update = envelope(
            f"{entry}Update",
            self.entry_singular,
            {**entry_name, "description": (FreeText | None, None), "enabled": (bool | None, None)},
        )

        profiles = Resource(
            model=self.profile,
            path=self.profile_path,
            singular=self.profile_singular,
            plural=self.profile_plural,
            label=self.profile_label,
            view=profile_view,
            scope=lambda ctx: select(self.profile),
            reader=get_admin_context,
            writer=get_admin_context,
            links=self.profile_links,
            delete=removing(self._refuse_profile_in_use),
        )
        entries = Resource(
            model=self.entry,
            path=self.entry_path,
            singular=self.entry_singular,
            plural=self.entry_plural,
            label=self.entry_label,
            view=entry_view,
            scope=lambda ctx: select(self.entry),
            writer=get_admin_context,
            delete=removing(self._refuse_entry_in_use),
        )
        profile_routes, entry_routes = profiles.router(), entries.router()
        refusal = "None is not a valid option for {key}"

        # Named apart: both catalogues' creates would otherwise share one name, and
        # with it their Idempotency-Keys (they are kept per route name).
        @profile_routes.post(
            "",
            status_code=201,
            response_model=None,
            responses=profiles.answered(201),
            name=f"create_{self.profile_singular}",
        )
        def create_profile(
            request: Request,
            payload: dict[str, Any] = Body(),
            session: Session = Depends(get_session),
            ctx: RequestContext = Depends(get_admin_context),
            keyed: idempotency.Guard | None = Depends(idempotency.guard),
        ) -> dict[str, Any]:
            body = profile_create.model_validate(payload).model_dump()[self.profile_singular]
            self.check_data(request, session, body["provider_name"], body[self.data])
            profile = self.profile(**body)
            session.add(profile)
            session.flush()
            answer = {self.profile_singular: profile_view.render(profile)}
            idempotency.commit(session, keyed, answer)
            return answer

        @profile_routes.put("/{ident}", response_model=None, responses=profiles.answered(200))
        def update_profile(
            ident: str,
            request: Request,
            payload: dict[str, Any] = Body(),
            session: Session = Depends(get_session),
            ctx: RequestContext = Depends(get_admin_context),
        ) -> dict[str, Any]:
            profile = profiles.find(session, ctx, ident)
            sent = profile_update.model_validate(payload).model_dump(exclude_unset=True)
            # Any null is refused: a profile has no defaults.
            given = sent.get(self.profile_singular, {})
            given = with_defaults(given, self.profile, given, refusal)
            if "provider_name" in given or self.data in given:
                self._refuse_profile_in_use(session, profile)
                self.check_data(
                    request,
                    session,
                    given.get("provider_name", profile.provider_name),
                    given.get(self.data, getattr(profile, self.data)),
                )
            for key, value in given.items():
                setattr(profile, key, value)
            session.commit()
            return {self.profile_singular: profile_view.render(profile)}

        @entry_routes.post(
            "",
            status_code=201,
            response_model=None,
            responses=entries.answered(201),
            name=f"create_{self.entry_singular}",
        )
        def create_entry(
            payload: dict[str, Any] = Body(),
            session: Session = Depends(get_session),
            ctx: RequestContext = Depends(get_admin_context),
            keyed: idempotency.Guard | None = Depends(idempotency.guard),
        ) -> dict[str, Any]:
            body = entry_create.model_validate(payload).model_dump()[self.entry_singular]
            profile_id = body[self.profile_ref]
            profile = session.get(self.profile, profile_id)
            if profile is None:
                raise BadRequest(f"{profile_id} is not a valid option for {self.profile_ref}")
            # Data stored before its references were checked may name what is gone.
            if self.refs_check is not None:
                self.refs_check(session, parse_profile_data(getattr(profile, self.data), self.data))
            self._refuse_duplicate(session, body["name"])
            entry = self.entry(**with_defaults(body, self.entry))
            session.add(entry)
            session.flush()
            answer = {self.entry_singular: entry_view.render(entry)}
            idempotency.commit(session, keyed, answer)
            return answer

        @entry_routes.put("/{ident}", response_model=None, responses=entries.answered(200))
        def update_entry(
            ident: str,
            payload: dict[str, Any] = Body(),
            session: Session = Depends(get_session),
            ctx: RequestContext = Depends(get_admin_context),
        ) -> dict[str, Any]:
            entry = entries.find(session, ctx, ident)
            sent = entry_update.model_validate(payload).model_dump(exclude_unset=True)
            given = with_defaults(
                sent.get(self.entry_singular, {}), self.entry, ("name", "enabled"), refusal
            )
            if "name" in given:
                self._refuse_duplicate(session, given["name"], entry)
            for key, value in given.items():
                setattr(entry, key, value)
            session.commit()
            return {self.entry_singular: entry_view.render(entry)}

        router = APIRouter()
        router.include_router(entry_routes)
        router.include_router(profile_routes)
        return router


FLAVORS = Catalogue(
    entry=Flavor,
    entry_path="/flavors",
    entry_singular="flavor",
    entry_plural="flavors",
    entry_label="Flavor",
    entry_name=FreeText,
    keyed_by_name=False,
    profile=FlavorProfile,
    profile_path="/flavorprofiles",
    profile_singular="flavorprofile",
    profile_plural="flavorprofiles",
    profile_links="flavorprofile_links",  # Octavia names this one in the singular
    profile_label="Flavor profile",
    profile_ref="flavor_profile_id",
    data="flavor_data",
    data_check=lambda provider: provider.validate_flavor,
    refs_check=protectionrefs.check_flavor_data,
    used_by=lambda flavor: LoadBalancer.flavor_id == flavor.id,
)
AVAILABILITY_ZONES = Catalogue(
    entry=AvailabilityZone,
    entry_path="/availabilityzones",
    entry_singular="availability_zone",
    entry_plural="availability_zones",
    entry_label="Availability Zone",
    entry_name=ZoneName,
    keyed_by_name=True,
    profile=AvailabilityZoneProfile,
    profile_path="/availabilityzoneprofiles",
    profile_singular="availability_zone_profile",
    profile_plural="availability_zone_profiles",
    profile_links="availability_zone_profile_links",
    profile_label="Availability Zone Profile",
    profile_ref="availability_zone_profile_id",
    data="availability_zone_data",
    data_check=lambda provider: provider.validate_availability_zone,
    used_by=lambda zone: LoadBalancer.availability_zone == zone.name,
)

router = APIRouter()
router.include_router(FLAVORS.router())
router.include_router(AVAILABILITY_ZONES.router())
