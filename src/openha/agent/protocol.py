"""Wire protocol between the agent and the control plane.

The controller PUTs `InstanceSpec`s (see `openha.domain.spec`) to the agent and gets
`InstanceStatus` back; the agent registers with the API (`RegisterRequest` →
`RegisterResponse`) and heartbeats (`HeartbeatReport` → `HeartbeatResponse`).
HAProxy frontend/backend/server names are listener/pool/member ids, so the counters
and states below are keyed by those ids.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from openha.domain.capacity import MAX_CAPACITY
from openha.domain.constants import MAX_INT32, MAX_INT64
from openha.domain.observed import ListenerCounters

# Generations and versions are BigInteger columns.
Generation = Annotated[int, Field(ge=0, le=MAX_INT64)]

# Instance states reported by the agent.
BUILDING = "BUILDING"
ACTIVE = "ACTIVE"
ERROR = "ERROR"
DELETED = "DELETED"

# VRRP states reported for an instance of a pair (keepalived's words).
VRRP_MASTER = "MASTER"
VRRP_BACKUP = "BACKUP"


class InstanceStatus(BaseModel):
    instance_id: str
    load_balancer_id: str = ""
    applied_generation: Generation = 0  # 0: nothing applied yet
    desired_generation: Generation = 0  # the last generation the agent was asked to apply
    state: str = BUILDING  # BUILDING | ACTIVE | ERROR | DELETED
    last_error: str | None = None
    haproxy_running: bool = False
    haproxy_pid: Annotated[int, Field(ge=0, le=MAX_INT32)] | None = None  # the master's pid
    vrrp_state: str | None = None  # VRRP_MASTER | VRRP_BACKUP | "FAULT" | None (SINGLE)
    # What of the instance's sandbox could not be applied (a limit, its cgroup), if any.
    sandbox_error: str | None = Field(default=None, max_length=4000)
    listeners: dict[str, ListenerCounters] = Field(default_factory=dict)
    # member id → "UP" | "DOWN" | "MAINT" | "DRAIN" | "NO_CHECK" | "NOLB"
    members: dict[str, str] = Field(default_factory=dict)
    pools: dict[str, str] = Field(default_factory=dict)  # pool id → "UP" | "DOWN"
    # Protected instances: how many times sources went over a limit (this process).
    limit_trips: Annotated[int, Field(ge=0)] | None = None


class RegisterRequest(BaseModel):
    name: str
    availability_zone: str = ""
    # The host's own setting (OPENHA_HOST_CAPACITY), if it has one; else the control
    # plane derives the capacity from the facts below (`openha.domain.capacity`).
    capacity: int | None = Field(default=None, ge=0, le=MAX_CAPACITY)
    memory_bytes: int | None = Field(default=None, ge=0, le=2**62)
    fd_limit: int | None = Field(default=None, ge=0, le=2**62)  # system-wide open files
    management_url: str  # where the controller reaches this agent, e.g. http://10.0.0.2:9877
    agent_secret: str  # bearer token the controller must present to this agent
    version: str = ""
    # Where this agent keeps instances: the controller renders socket paths under it.
    agent_dir: str = ""
    # How this host walls its instances in: cgroup version and mounts, uid range,
    # problems (`agent.sandbox.SandboxHost.describe`).
    sandbox: dict[str, Any] = Field(default_factory=dict)


class RegisterResponse(BaseModel):
    host_id: str


class HeartbeatReport(BaseModel):
    """What changed on the host since the API acknowledged the last report.

    `full`: `instances` holds every instance the agent has (the first report after
    a start, and now and then), so any other instance of the host is gone. Otherwise
    it holds those whose status changed, and `gone` those removed since.
    """

    host_id: str
    name: str
    instances: list[InstanceStatus] = Field(default_factory=list)
    full: bool = True
    gone: list[str] = Field(default_factory=list)
    # The placement version of the last wanted list the agent got, when every instance
    # it has is on that list: the answer then carries a list only if it changed.
    wanted_version: Generation | None = None
    instance_count: Annotated[int, Field(ge=0, le=MAX_INT32)] = 0
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # The host's log delivery state (`LogPipeline.delivery`), when it changed.
    log_delivery: dict[str, Any] | None = None
    # How the host walls instances in (as at registration), in full reports only.
    sandbox: dict[str, Any] | None = None
    # Leftovers no instance directory explains (`agent.strays`), when that changed:
    # {"current": [stray, ...], "reaped": [stray removed since the last report, ...]}.
    strays: dict[str, Any] | None = None


class HeartbeatResponse(BaseModel):
    # When a list is given, instances the agent runs that are not in it are orphans,
    # removed after the host's grace period. None means "no opinion" (e.g. the API
    # could not tell, or the list did not change since `wanted_version`).
    wanted_instance_ids: list[str] | None = None
    wanted_version: int | None = None
    # Orphans whose load balancer runs elsewhere (rebuilt or migrated while this host
    # was away): removed at once, without the grace period (their VIP is in use).
    superseded_instance_ids: list[str] = Field(default_factory=list)


class LogsResponse(BaseModel):
    """A load balancer's log records on one host, oldest first, and where to go on."""

    records: list[dict[str, Any]]
    cursor: str  # give it back as `after` to get what was written since
