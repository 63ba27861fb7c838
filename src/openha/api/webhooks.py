"""Webhook subscriptions: bodies, views and routes, for operators and for tenants.

`/v2/manage/webhooks` (admin) lists every webhook; the ones created there hear every
project's events, host events included. `/v2/lbaas/webhooks` (an extension) holds a
project's own: they hear only that project's events. Both serve

    GET/POST <path>, GET/PUT/DELETE <path>/{id}, GET <path>/{id}/deliveries

A webhook's `secret` signs its deliveries (`openha.domain.webhooks`): it is
write-only, given on create or update and never answered, except when the create
had none and one was generated: that create's answer holds it, once. Re-enabling a
webhook (`enabled: true`) clears its failure count. Deliveries are sent by the
controller (`openha.controller.webhooks`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import AliasPath, Field
from sqlalchemy import Select, delete, select
from sqlalchemy.orm import Session, joinedload

from openha.api import idempotency
from openha.api.context import RequestContext, get_session
from openha.api.errors import BadRequest
from openha.api.resources import Parent, Resource
from openha.api.types import StrictModel
from openha.api.views import Timestamp, View
from openha.domain import constants as c
from openha.domain.webhooks import kinds_problem, url_problem
from openha.models import LoadBalancer, Webhook, WebhookDelivery

SECRET_BYTES = 32


class WebhookView(View):
    id: str
    project_id: str
    all_projects: bool
    name: str
    url: str
    kinds: list[str]
    min_severity: str
    load_balancer_id: str | None
    enabled: bool
    consecutive_failures: int
    disabled_reason: str | None
    created_at: Timestamp
    updated_at: Timestamp


class DeliveryView(View):
    id: int
    webhook_id: str
    event_id: int
    event_kind: str = Field(validation_alias=AliasPath("event", "kind"))
    status: str
    attempts: int
    created_at: Timestamp
    last_attempt_at: Timestamp
    next_attempt_at: Timestamp
    response_status: int | None
    last_error: str | None
    duration_ms: int | None


class WebhookFields(StrictModel):
    name: str | None = Field(default=None, max_length=255)
    url: str | None = Field(default=None, max_length=2048)
    secret: str | None = Field(default=None, min_length=16, max_length=255)
    kinds: list[str] | None = None
    min_severity: str | None = None
    load_balancer_id: str | None = Field(default=None, max_length=36)
    enabled: bool | None = None


class WebhookCreate(WebhookFields):
    url: str = Field(max_length=2048)
    project_id: str | None = Field(default=None, max_length=255)


class WebhookCreateBody(StrictModel):
    webhook: WebhookCreate


class WebhookUpdateBody(StrictModel):
    webhook: WebhookFields


def _check(session: Session, ctx: RequestContext, body: WebhookFields, project: str) -> None:
    """400 for what cannot be a subscription; 404 for a load balancer not the caller's."""
    if body.url is not None and (problem := url_problem(body.url)):
        raise BadRequest(problem)
    if body.kinds is not None and (problem := kinds_problem(body.kinds)):
        raise BadRequest(problem)
    if body.min_severity is not None and body.min_severity not in c.SEVERITIES:
        raise BadRequest(f"min_severity must be one of {', '.join(c.SEVERITIES)}.")
    if body.load_balancer_id is not None:
        lb = ctx.get(session, LoadBalancer, body.load_balancer_id, "Load Balancer")
        if not ctx.is_admin and lb.project_id != project:
            raise BadRequest("load_balancer_id must be a load balancer of the webhook's project.")


def resources(
    path: str,
    scope: Callable[[RequestContext], Select[Any]],
    reader: Callable[..., RequestContext],
) -> tuple[Resource[Webhook], Resource[WebhookDelivery]]:
    hooks: Resource[Webhook] = Resource(
        model=Webhook,
        path=path,
        singular="webhook",
        plural="webhooks",
        label="Webhook",
        view=WebhookView,
        scope=scope,
        reader=reader,
        writer=reader,
        delete=_delete,
        unknown_filters="ignore",
    )
    deliveries: Resource[WebhookDelivery] = Resource(
        model=WebhookDelivery,
        path=f"{path}/{{webhook_id}}/deliveries",
        singular="delivery",
        plural="deliveries",
        label="Delivery",
        view=DeliveryView,
        scope=lambda ctx: select(WebhookDelivery),  # narrowed to a webhook the caller sees
        parent=Parent("webhook_id", WebhookDelivery.webhook_id, hooks),
        options=(joinedload(WebhookDelivery.event),),
        reader=reader,
        has_show=False,
        unknown_filters="ignore",
    )
    return hooks, deliveries


def _delete(
    resource: Resource[Any], request: Any, session: Session, ctx: RequestContext, ident: str
) -> None:
    hook = resource.find(session, ctx, ident)
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id))
    session.delete(hook)


def router(
    hooks: Resource[Webhook],
    deliveries: Resource[WebhookDelivery],
    *,
    all_projects: bool,
) -> APIRouter:
    """The routes of one of the two webhook collections (`all_projects`: the operators')."""
    out = hooks.router()
    writer = hooks.writer

    # Named apart: Idempotency-Keys are kept per route name.
    @out.post(
        "",
        status_code=201,
        responses=hooks.answered(201),
        name="create_operator_webhook" if all_projects else "create_project_webhook",
    )
    def create_webhook(
        payload: WebhookCreateBody,
        session: Session = Depends(get_session),
        ctx: RequestContext = Depends(writer),
        keyed: idempotency.Guard | None = Depends(idempotency.guard),
    ) -> dict[str, Any]:
        body = payload.webhook
        if all_projects and body.project_id is not None:
            raise BadRequest("An operator's webhook hears every project: no project_id.")
        owner = ctx.project_id or "admin"
        project = owner if all_projects else ctx.owner_project(body.project_id)
        _check(session, ctx, body, project)
        generated = body.secret is None
        secret = secrets.token_urlsafe(SECRET_BYTES) if generated else body.secret
        hook = Webhook(
            project_id=project,
            all_projects=all_projects,
            name=body.name or "",
            url=body.url,
            secret=secret,
            kinds=list(dict.fromkeys(body.kinds or [])),
            min_severity=body.min_severity or c.SEVERITY_INFO,
            load_balancer_id=body.load_balancer_id,
            enabled=True if body.enabled is None else body.enabled,
        )
        session.add(hook)
        session.flush()
        answer = hooks.show(session, ctx, hook.id)
        if generated:
            answer["webhook"]["secret"] = secret  # shown this once (and to its replay)
        idempotency.commit(session, keyed, answer)
        return answer

    @out.put("/{webhook_id}", responses=hooks.answered(200))
    def update_webhook(
        webhook_id: str,
        payload: WebhookUpdateBody,
        session: Session = Depends(get_session),
        ctx: RequestContext = Depends(writer),
    ) -> dict[str, Any]:
        hook = hooks.find(session, ctx, webhook_id)
        body = payload.webhook
        _check(session, ctx, body, hook.project_id)
        given = body.model_fields_set
        for key in ("name", "url", "secret", "min_severity", "enabled"):
            value = getattr(body, key)
            if key in given and value is None and key != "name":
                raise BadRequest(f"{key} must not be null.")
            if key in given:
                setattr(hook, key, value if value is not None else "")
        if "kinds" in given:
            hook.kinds = list(dict.fromkeys(body.kinds or []))
        if "load_balancer_id" in given:
            hook.load_balancer_id = body.load_balancer_id
        if body.enabled:
            hook.consecutive_failures = 0
            hook.disabled_reason = None
        session.flush()
        answer = hooks.show(session, ctx, hook.id)
        session.commit()
        return answer

    both = APIRouter()
    both.include_router(out)
    both.include_router(deliveries.router())
    return both
