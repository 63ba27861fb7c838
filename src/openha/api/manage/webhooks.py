"""/v2/manage/webhooks: operators' webhooks, hearing every project (see `openha.api.webhooks`).

The list shows every webhook, tenants' included."""

from __future__ import annotations

from sqlalchemy import select

from openha.api import webhooks
from openha.api.context import get_admin_context
from openha.models import Webhook

WEBHOOKS, DELIVERIES = webhooks.resources(
    "/manage/webhooks", lambda ctx: select(Webhook), get_admin_context
)
router = webhooks.router(WEBHOOKS, DELIVERIES, all_projects=True)
