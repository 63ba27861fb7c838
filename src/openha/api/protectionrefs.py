"""Who names a protection profile, and refusing references that name none.

A flavor profile's data names its load balancers' default protection profile
(`protection_profile`, a name or an id); an operator's override and under-attack
mode name one by id on the load balancer. A name that matches no profile would
silently mean "no protection", so every way in is checked here: a flavor profile's
data when it is created or changed, a flavor when it is made from one, a load
balancer when it is created with one (400); and a profile that anything names
cannot be deleted (409, naming who uses it), nor renamed while flavor data names
it by its name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from openha.api.errors import BadRequest, quote_input
from openha.controller.snapshot import FLAVOR_PROTECTION_KEY, profile_named
from openha.models import Flavor, FlavorProfile, LoadBalancer, ProtectionProfile

LABEL = "Protection Profile"
# How many users a refusal lists before it only counts the rest.
SHOWN = 10


def _named_in(raw: str | None) -> str | None:
    """The protection profile reference in a flavor profile's data string, if any."""
    try:
        data = json.loads(raw or "{}")
    except ValueError:
        return None
    ref = data.get(FLAVOR_PROTECTION_KEY) if isinstance(data, dict) else None
    return ref if isinstance(ref, str) and ref else None


def check_flavor_data(session: Session, data: Mapping[str, Any]) -> None:
    """400 if `data` (a flavor profile's, parsed) names a protection profile that does
    not exist. The reference's grammar is the provider's check (`validate_flavor`)."""
    ref = data.get(FLAVOR_PROTECTION_KEY)
    if ref is None:
        return
    if not isinstance(ref, str) or not ref or profile_named(session, ref) is None:
        raise BadRequest(
            f"flavor_data names {FLAVOR_PROTECTION_KEY} {quote_input(ref)}, "
            f"which is no {LABEL}'s name or id."
        )


@dataclass(frozen=True)
class Users:
    """What names one protection profile."""

    flavor_profiles: list[str]  # ids of flavor profiles whose data names it
    flavors: list[str]  # ids of the flavors made from those
    load_balancers: list[str]  # ids of LBs with it as override or under-attack profile

    def __bool__(self) -> bool:
        return bool(self.flavor_profiles or self.flavors or self.load_balancers)

    def describe(self) -> str:
        parts = []
        for label, ids in (
            ("flavor profile", self.flavor_profiles),
            ("flavor", self.flavors),
            ("load balancer", self.load_balancers),
        ):
            if ids:
                shown = ", ".join(ids[:SHOWN])
                more = f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else ""
                parts.append(f"{label}{'s' if len(ids) > 1 else ''} {shown}{more}")
        return "; ".join(parts)


def flavor_profiles_naming(session: Session, names: set[str]) -> list[str]:
    """Ids of the flavor profiles whose data names one of `names` (a profile's id, name)."""
    rows = session.execute(select(FlavorProfile.id, FlavorProfile.flavor_data))
    return sorted(row_id for row_id, raw in rows if _named_in(raw) in names)


def users(session: Session, profile: ProtectionProfile) -> Users:
    flavor_profiles = flavor_profiles_naming(session, {profile.id, profile.name})
    flavors = (
        list(
            session.scalars(
                select(Flavor.id)
                .where(Flavor.flavor_profile_id.in_(flavor_profiles))
                .order_by(Flavor.id)
            )
        )
        if flavor_profiles
        else []
    )
    lbs = session.scalars(
        select(LoadBalancer.id)
        .where(
            or_(
                LoadBalancer.protection_profile_id == profile.id,
                LoadBalancer.under_attack_profile_id == profile.id,
            )
        )
        .order_by(LoadBalancer.id)
    )
    return Users(flavor_profiles, flavors, list(lbs))


def applies_to(session: Session, profile: ProtectionProfile) -> ColumnElement[bool]:
    """The load balancers whose configuration `profile` shapes, as a WHERE clause: those
    naming it, and those of flavors naming it that have no override of their own."""
    found = users(session, profile)
    clauses = [
        LoadBalancer.protection_profile_id == profile.id,
        LoadBalancer.under_attack_profile_id == profile.id,
    ]
    if found.flavors:
        clauses.append(
            LoadBalancer.flavor_id.in_(found.flavors) & LoadBalancer.protection_profile_id.is_(None)
        )
    return or_(*clauses)
