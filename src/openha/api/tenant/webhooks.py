"""/v2/lbaas/webhooks: a project's webhooks, hearing its own events only (an extension;
see `openha.api.webhooks`). Operators' webhooks are not listed here."""

from __future__ import annotations

from openha.api import webhooks
from openha.api.context import get_context
from openha.models import Webhook

WEBHOOKS, DELIVERIES = webhooks.resources(
    "/webhooks",
    lambda ctx: ctx.visible(Webhook).where(Webhook.all_projects.is_(False)),
    get_context,
)
router = webhooks.router(WEBHOOKS, DELIVERIES, all_projects=False)
