"""What a data plane reports: Octavia statuses by object id, and listener counters.

`ListenerCounters` is the one definition of a listener's counters: the agent
reports them per instance in its heartbeat (`openha.agent.protocol`), and the
API stores their sums over an LB's instances when they moved
(`openha.models.ListenerStats`, whose columns are these fields). Statuses are
the controller's to derive (`ObservedState`), when a report changed them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel


class ListenerCounters(BaseModel):
    """One listener's traffic counters, as HAProxy counts them on its frontend."""

    bytes_in: int = 0
    bytes_out: int = 0
    active_connections: int = 0
    total_connections: int = 0
    request_errors: int = 0

    def __add__(self, other: ListenerCounters) -> ListenerCounters:
        return ListenerCounters(
            **{name: getattr(self, name) + getattr(other, name) for name in COUNTER_FIELDS}
        )


COUNTER_FIELDS: tuple[str, ...] = tuple(ListenerCounters.model_fields)


@dataclass
class ObservedState:
    """Operating statuses by object id."""

    load_balancer: str
    listeners: dict[str, str] = field(default_factory=dict)
    pools: dict[str, str] = field(default_factory=dict)
    members: dict[str, str] = field(default_factory=dict)
    health_monitors: dict[str, str] = field(default_factory=dict)
    l7policies: dict[str, str] = field(default_factory=dict)
    l7rules: dict[str, str] = field(default_factory=dict)


__all__ = ["COUNTER_FIELDS", "ListenerCounters", "ObservedState"]
