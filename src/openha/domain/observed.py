"""What a data plane reports, as Octavia statuses by object id and counters by listener."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ListenerCounters:
    bytes_in: int = 0
    bytes_out: int = 0
    active_connections: int = 0
    total_connections: int = 0
    request_errors: int = 0


@dataclass
class ObservedState:
    """Operating statuses by object id, and counters by listener id."""

    load_balancer: str
    listeners: dict[str, str] = field(default_factory=dict)
    pools: dict[str, str] = field(default_factory=dict)
    members: dict[str, str] = field(default_factory=dict)
    health_monitors: dict[str, str] = field(default_factory=dict)
    l7policies: dict[str, str] = field(default_factory=dict)
    l7rules: dict[str, str] = field(default_factory=dict)
    listener_stats: dict[str, ListenerCounters] = field(default_factory=dict)


__all__ = ["ListenerCounters", "ObservedState"]
