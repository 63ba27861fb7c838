"""/v2/manage/operations: admin actions under way or done, and how actions answer 202.

Every admin action (migrate, drain, ...) writes an operation row and answers
`202 Accepted` with the operation and its `Location`; the controller advances it
(`openha.controller.operations`). List filters: `kind`, `state`, `target_id`,
`target_type`, `parent_id` (a drain's migrations).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi.responses import JSONResponse
from pydantic import BeforeValidator, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from openha.api import idempotency
from openha.api.context import RequestContext, get_admin_context
from openha.api.resources import Resource
from openha.api.views import Timestamp, View
from openha.controller import operations
from openha.domain import constants as c
from openha.models import Operation


def _progress(data: dict[str, Any] | None) -> dict[str, Any]:
    shown = ("total", "moved", "instances_left", "running", "phase", "current", "waiting_for")
    return {k: (data or {})[k] for k in shown if k in (data or {})}


class OperationView(View):
    id: str
    kind: str
    target_type: str
    target_id: str
    state: str
    params: dict[str, Any]
    # What the kind reports while it runs (progress, what it waits for).
    progress: Annotated[dict[str, Any], BeforeValidator(_progress)] = Field(
        default_factory=dict, validation_alias="data"
    )
    steps: list[dict[str, Any]]
    error: str | None
    requested_by: str
    parent_id: str | None
    created_at: Timestamp
    updated_at: Timestamp


OPERATIONS: Resource[Operation] = Resource(
    model=Operation,
    path="/manage/operations",
    unknown_filters="ignore",
    singular="operation",
    plural="operations",
    label="Operation",
    view=OperationView,
    scope=lambda ctx: select(Operation),
    reader=get_admin_context,
)
router = OPERATIONS.router()


def requester(ctx: RequestContext) -> str:
    return f"project:{ctx.project_id or '-'} roles:{','.join(sorted(ctx.roles))}"


def open_operation(session: Session, kind: str, target_id: str) -> Operation | None:
    """An operation of `kind` on `target_id` that is not over yet."""
    return session.scalar(
        select(Operation).where(
            Operation.kind == kind,
            Operation.target_id == target_id,
            Operation.state.in_(c.OPERATION_OPEN),
        )
    )


def start(
    session: Session,
    ctx: RequestContext,
    kind: str,
    target_type: str,
    target_id: str,
    params: dict[str, Any],
) -> Operation:
    return operations.start(session, kind, target_type, target_id, params, requester(ctx))


def accepted(
    session: Session, ctx: RequestContext, op: Operation, keyed: idempotency.Guard | None
) -> JSONResponse:
    """202 with the operation and where to follow it; commits (with the request's
    Idempotency-Key, if it has one: a retry gets this answer and starts nothing)."""
    session.flush()
    body = OPERATIONS.show(session, ctx, op.id)
    idempotency.commit(session, keyed, body)
    return JSONResponse(
        body, status_code=202, headers={"Location": f"/v2/manage/operations/{op.id}"}
    )
