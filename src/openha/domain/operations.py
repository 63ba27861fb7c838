"""What one step of an admin operation tells the engine: the vocabulary every kind speaks.

A kind's step function (`openha.controller.operations`) is called again and again
with the operation's memory (`data`) until it says the operation is over. Each call
does at most one thing and says which (`progressed`), or that it waits for the data
plane (`waiting`); the engine writes the step down and calls again. A step must be
safe to repeat: the process may die after it acted and before this was recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Step:
    # "progressed": `name` was done; "waiting": nothing to do yet; "succeeded"/"failed": over.
    outcome: str
    name: str = ""
    detail: str = ""
    # Keys to set in the operation's memory.
    data: dict[str, Any] = field(default_factory=dict)
    # Seconds before the next call.
    delay: float = 0.0
    # What the step did, one record each (`{"step", "detail", ...}`), written down
    # before the step itself: an action that does several things in one call.
    report: tuple[dict[str, Any], ...] = ()

    @classmethod
    def progressed(cls, name: str, detail: str = "", **data: Any) -> Step:
        return cls("progressed", name, detail, data)

    @classmethod
    def waiting(cls, detail: str = "", delay: float = 0.5, **data: Any) -> Step:
        return cls("waiting", "", detail, data, delay)

    @classmethod
    def succeeded(
        cls, detail: str = "", report: tuple[dict[str, Any], ...] = (), **data: Any
    ) -> Step:
        return cls("succeeded", "done", detail, data, report=report)

    @classmethod
    def failed(cls, error: str, report: tuple[dict[str, Any], ...] = ()) -> Step:
        return cls("failed", "failed", error, report=report)


class StepError(Exception):
    """A step cannot go on, for good: the operation fails with this message."""
