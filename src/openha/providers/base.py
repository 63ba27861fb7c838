"""The provider driver interface every driver implements, and the types it exchanges.

The controller is the only caller of `apply`/`delete`/`observe`; each call is
level-triggered and idempotent: it receives the whole desired tree and must
converge to it, however many times it is called. A provider never writes the
load balancer's provisioning status itself: it answers, the controller decides.
The fleet-wide decisions are the controller's too: whether automatic failover
is paused (its circuit breaker) comes with every `apply`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy.orm import Session, sessionmaker

from openha.domain.observed import ObservedState
from openha.domain.operations import Step, StepError
from openha.domain.spec import LoadBalancerSpec

if TYPE_CHECKING:
    from fastapi import APIRouter

    from openha.settings import Settings


@dataclass(frozen=True)
class Capability:
    name: str
    description: str


@dataclass(frozen=True)
class ApplyResult:
    """`done`: every data plane runs `generation`. `error`: why not (retried with backoff)."""

    done: bool
    error: str | None = None
    # The fleet has no room for the LB (not the LB's own fault): operators must act.
    no_capacity: bool = False

    @classmethod
    def applied(cls) -> ApplyResult:
        return cls(done=True)

    @classmethod
    def in_progress(cls) -> ApplyResult:
        return cls(done=False)

    @classmethod
    def failed(cls, error: str) -> ApplyResult:
        return cls(done=False, error=error)

    @classmethod
    def out_of_capacity(cls, error: str) -> ApplyResult:
        return cls(done=False, error=error, no_capacity=True)


@dataclass(frozen=True)
class RepairStep:
    """One thing an operator's action did (sync, reload, recover), for its report."""

    action: str
    ok: bool = True
    detail: str = ""
    instance_id: str | None = None
    host: str | None = None


class UnsupportedOption(ValueError):
    """The request is valid Octavia but this provider cannot honour it (a 400)."""


@dataclass
class ProviderContext:
    settings: Settings
    session_factory: sessionmaker[Session]


class Provider(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    # Whether `migrate_step` moves LBs between hosts (the API refuses a migrate otherwise).
    can_migrate: ClassVar[bool] = False
    # Option values this provider refuses, by "<object>.<field>": checked by the API.
    unsupported: ClassVar[Mapping[str, frozenset[Any]]] = {}

    def __init__(self, context: ProviderContext) -> None:
        self.context = context

    def check_option(self, option: str, value: Any) -> None:
        if value in self.unsupported.get(option, frozenset()):
            raise UnsupportedOption(
                f"Provider '{self.name}' does not support a requested option: "
                f"{option.replace('.', ' ')} {value}"
            )

    def flavor_capabilities(self) -> list[Capability]:
        return []

    def availability_zone_capabilities(self) -> list[Capability]:
        return []

    def validate_flavor(self, data: Mapping[str, Any]) -> None:
        """Raise UnsupportedOption for keys or values this provider does not know."""
        known = {c.name for c in self.flavor_capabilities()}
        unknown = set(data) - known
        if unknown:
            raise UnsupportedOption(
                f"Provider '{self.name}' does not support flavor option(s): "
                + ", ".join(sorted(unknown))
            )

    def validate_availability_zone(self, data: Mapping[str, Any]) -> None:
        known = {c.name for c in self.availability_zone_capabilities()}
        unknown = set(data) - known
        if unknown:
            raise UnsupportedOption(
                f"Provider '{self.name}' does not support availability zone option(s): "
                + ", ".join(sorted(unknown))
            )

    @abstractmethod
    def apply(self, spec: LoadBalancerSpec, *, failover_paused: str | None) -> ApplyResult:
        """Converge the data plane to `spec` (idempotent).

        `failover_paused` is the controller's circuit breaker: while it holds a
        reason, nothing that runs on a lost host may be rebuilt elsewhere.
        """

    @abstractmethod
    def delete(self, load_balancer_id: str) -> bool:
        """Remove every trace of the LB from the data plane; True once nothing is left."""

    @abstractmethod
    def observe(self, spec: LoadBalancerSpec) -> ObservedState | None:
        """What the data plane reports now; None when nothing is known yet."""

    def failover(self, load_balancer_id: str) -> None:  # noqa: B027 - optional
        """Rebuild the LB's data plane (admin request); the default is a no-op."""

    def migrate_step(
        self, spec: LoadBalancerSpec, params: Mapping[str, Any], memory: Mapping[str, Any]
    ) -> Step:
        """One step of moving the LB's instances (`params`: `host`, `availability_zone`
        or `from_host`); called again with `memory` updated until it says it is over."""
        raise StepError(f"Provider '{self.name}' cannot migrate load balancers")

    # --- operators' repairs (`openha.controller.actions`) --------------------------------

    def sync(self, spec: LoadBalancerSpec) -> list[RepairStep]:
        """Render `spec` again and push it to every placed instance even if it runs it
        already, repairing drift (a file edited by hand, a namespace deleted)."""
        return [RepairStep("sync", detail=f"provider {self.name} has no data plane to sync")]

    def reload(self, load_balancer_id: str) -> list[RepairStep]:
        """A hitless reload of every instance from the config it holds."""
        return [RepairStep("reload", detail=f"provider {self.name} has no data plane to reload")]

    def render(self, session: Session, spec: LoadBalancerSpec, *, place: bool) -> dict[str, str]:
        """The config files `spec` gives each instance, by "<role> <instance id> <file>",
        in the caller's session (`place`: placing instances not placed yet, which the
        caller's rollback undoes)."""
        return {}

    def running(self, load_balancer_id: str) -> dict[str, str | None]:
        """The config files each instance has now (keys as `render`); None: unreachable."""
        return {}

    def operator_router(self) -> APIRouter | None:
        """Extra admin-only routes mounted under /v2/manage/providers/<name>/."""
        return None
