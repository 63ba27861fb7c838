"""Every kind of admin operation the controller knows: one registry, one line each.

A kind is a step function (`openha.controller.operations.StepFunction`): called
again and again with the operation's memory, it does one idempotent thing and
says what (`openha.domain.operations.Step`). The repairs (sync, reload,
force-recover) are actions done in one call, each a list of `RepairStep`s
(`openha.controller.actions`).
"""

from __future__ import annotations

from collections.abc import Mapping

from openha.controller import actions, drain, migrate
from openha.controller.operations import StepFunction

KINDS: Mapping[str, StepFunction] = {
    "migrate": migrate.step,
    "drain": drain.step,
    "sync": actions.as_kind(actions.sync),
    "reload": actions.as_kind(actions.reload),
    "force-recover": actions.as_kind(actions.force_recover),
}
