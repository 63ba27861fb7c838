"""What a data plane reports: Octavia statuses by object id, and listener counters.

`ListenerCounters` is the one definition of a listener's counters: the agent
reports them per instance in its heartbeat (`openha.agent.protocol`), and the
API stores their sums over an LB's instances when they moved
(`openha.models.ListenerStats`, whose columns are these fields). Statuses are
the controller's to derive (`ObservedState`), when a report changed them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from pydantic import BaseModel, Field

# Counters are BigInteger columns holding the sum over an LB's instances: one instance's
# figure stays far enough below 2**63 for a pair's sum to fit.
Counter = Annotated[int, Field(ge=0, le=2**62)]


class ListenerCounters(BaseModel):
    """One listener's traffic counters, as HAProxy counts them on its frontend."""

    bytes_in: Counter = 0
    bytes_out: Counter = 0
    active_connections: Counter = 0
    total_connections: Counter = 0
    request_errors: Counter = 0

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
