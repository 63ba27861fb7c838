"""Every kind of admin operation the controller knows: one registry, one line each.

A kind is a step function (`openha.controller.operations.StepFunction`): called
again and again with the operation's memory, it does one idempotent thing and
says what (`openha.domain.operations.Step`).
"""

from __future__ import annotations

from collections.abc import Mapping

from openha.controller import drain, migrate
from openha.controller.operations import StepFunction

KINDS: Mapping[str, StepFunction] = {
    "migrate": migrate.step,
    "drain": drain.step,
}
