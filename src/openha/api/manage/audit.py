"""/v2/manage/audit: who changed what, when, and how it ended (see `openha.api.audit`).

Filters: `project_id`, `user_id`, `method`, `status_code` (also `status`: a code or
a class such as `4xx`), `object_id` (any id the write named), `since` / `until`
(ISO 8601, UTC); Octavia's `limit`, `marker` and `sort` page through them.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import ColumnElement, and_, or_, select

from openha.api.context import get_admin_context
from openha.api.errors import BadRequest
from openha.api.query import tag_clause
from openha.api.resources import Resource
from openha.api.views import Timestamp, View
from openha.models import AuditRecord


class AuditView(View):
    id: int
    created_at: Timestamp
    project_id: str | None
    user_id: str | None
    roles: list[str]
    method: str
    path: str
    object_ids: list[str]
    body_sha256: str | None
    status_code: int
    duration_ms: float


def _time(raw: str) -> datetime:
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"Invalid time '{raw[:100]}': use ISO 8601.") from None
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def _status(values: list[str]) -> ColumnElement[bool]:
    clauses = []
    for raw in values:
        if len(raw) == 3 and raw[0].isdigit() and raw[1:].lower() == "xx":
            low = int(raw[0]) * 100
            code = AuditRecord.status_code
            clauses.append(and_(code >= low, code < low + 100))
        elif raw.isdigit() and len(raw) == 3:
            clauses.append(AuditRecord.status_code == int(raw))
        else:
            raise BadRequest(f"Invalid status '{raw[:100]}': a code (404) or a class (4xx).")
    return or_(*clauses)


AUDIT: Resource[AuditRecord] = Resource(
    model=AuditRecord,
    path="/manage/audit",
    singular="audit_record",
    plural="audit_records",
    label="Audit record",
    view=AuditView,
    scope=lambda ctx: select(AuditRecord),
    reader=get_admin_context,
    has_show=False,
    filters={
        "object_id": lambda values: or_(*(tag_clause(AuditRecord.object_ids, v) for v in values)),
        "since": lambda values: and_(*(AuditRecord.created_at >= _time(v) for v in values)),
        "until": lambda values: and_(*(AuditRecord.created_at < _time(v) for v in values)),
        "status": _status,
    },
)
router = AUDIT.router()
