"""Reading the audit trail: who may, which records they see, filters and keyset pages.

* Auditors (审计员) and platform admins read every record.
* A department admin reads the records about their own department: those whose
  actor or whose subject (the department whose data or resource it is) is theirs.
* Nobody else reads the trail. A record out of the caller's scope answers 404, so
  its existence is not given away.

The API, the pages and the exports all go through ``conditions``, so they cannot
disagree about scope or filters.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Row, false, func, or_, select
from sqlalchemy.orm import Session

from datatong.audit.labels import BEIJING
from datatong.audit.models import AuditRecord
from datatong.db import MAX_ID, session_factory
from datatong.errors import Forbidden, NotFound, Unauthenticated, invalid
from datatong.orgs.models import Role
from datatong.orgs.service import Principal

READ_ALL_ROLES = (Role.AUDITOR, Role.PLATFORM_ADMIN)
READER_ROLES = (*READ_ALL_ROLES, Role.DEPT_ADMIN)
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
EXPORT_CAP = 1_000_000
EXPORT_CHUNK = 2_000
OUTCOMES = {"allowed": "allowed", "refused": "refused", "允许": "allowed", "拒绝": "refused"}
# Longest accepted value per filter (a trailing "*" on top of the column's width).
FILTER_LIMITS = {
    "department": 32,
    "actor": 129,
    "resource": 161,
    "action": 65,
    "outcome": 8,
    "since": 40,
    "until": 40,
    "request_id": 64,
}
FILTER_LABELS = {
    "department": "部门",
    "actor": "操作者",
    "resource": "资源",
    "action": "操作",
    "outcome": "结果",
    "since": "开始时间",
    "until": "结束时间",
    "request_id": "请求编号",
}


# ---------------------------------------------------------------- who may read


def may_read(principal: Principal) -> bool:
    return principal.kind == "user" and principal.role in READER_ROLES


def reads_everything(principal: Principal) -> bool:
    return principal.kind == "user" and principal.role in READ_ALL_ROLES


def require_reader(principal: Principal) -> None:
    if not principal.is_authenticated:
        raise Unauthenticated()
    if not may_read(principal):
        raise Forbidden(
            "仅审计员、平台管理员和部门管理员可查看审计日志",
            "Only auditors and administrators may read the audit trail",
        )


def scope(principal: Principal) -> ColumnElement[bool] | None:
    """The records ``principal`` may read (None: all of them)."""
    require_reader(principal)
    if reads_everything(principal):
        return None
    code = principal.department_code
    if not code:
        return false()
    return or_(AuditRecord.subject_department == code, AuditRecord.actor_department == code)


# ---------------------------------------------------------------- filters


@dataclass(frozen=True)
class Filters:
    """Search filters as given (trimmed); ``since_at``/``until_at`` are the time bounds in
    the stored text form (``until_at`` exclusive), which sorts like the times it spells."""

    department: str | None = None
    actor: str | None = None
    resource: str | None = None
    action: str | None = None
    outcome: str | None = None
    since: str | None = None
    until: str | None = None
    request_id: str | None = None
    since_at: str | None = None
    until_at: str | None = None

    def params(self) -> dict[str, str]:
        """The filters in force, as query parameters (for links and the trail's own record)."""
        return {k: v for k, v in asdict(self).items() if v and k in FILTER_LIMITS}


def stored_time(moment: datetime) -> str:
    """``moment`` as the trail stores times: ISO-8601 UTC with microseconds and Z."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _time_bound(name: str, text: str, end: bool) -> str | None:
    """The stored-text bound of ``since`` (inclusive) or ``until`` (exclusive).

    A date is a whole day; a time without an offset is Beijing time (北京时间), like
    every time the platform shows. None: the bound lies beyond any stored time."""
    whole_day = "T" not in text and " " not in text
    try:
        if whole_day:
            moment = datetime.combine(date.fromisoformat(text), time(), BEIJING)
        else:
            moment = datetime.fromisoformat(text.replace("z", "Z"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=BEIJING)
    except ValueError:
        raise invalid(
            f"audit.{name}_invalid",
            f"{FILTER_LABELS[name]}须为日期或时间，如 2026-11-22 或 2026-11-22T09:30:00+08:00",
            f"{name} must be an ISO date or date-time, e.g. 2026-11-22 or 2026-11-22T09:30:00+08:00",
            name,
        ) from None
    try:
        if end:
            moment += timedelta(days=1) if whole_day else timedelta(microseconds=1)
        return stored_time(moment)
    except (OverflowError, ValueError):  # before year 1 or after 9999: no bound at all
        return None


def _text(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if len(value) > FILTER_LIMITS[name]:
        raise invalid(
            "audit.filter_too_long",
            f"{FILTER_LABELS[name]}过长（最多 {FILTER_LIMITS[name]} 个字符）",
            f"{name} is too long (at most {FILTER_LIMITS[name]} characters)",
            name,
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise invalid(
            "audit.filter_invalid",
            f"{FILTER_LABELS[name]}含有控制字符",
            f"{name} holds control characters",
            name,
        )
    return value


def parse_filters(
    *,
    department: str | None = None,
    actor: str | None = None,
    resource: str | None = None,
    action: str | None = None,
    outcome: str | None = None,
    since: str | None = None,
    until: str | None = None,
    request_id: str | None = None,
) -> Filters:
    """Check and normalise filters; raises ValidationFailed (422) naming the field."""
    values = {
        "department": _text("department", department),
        "actor": _text("actor", actor),
        "resource": _text("resource", resource),
        "action": _text("action", action),
        "outcome": _text("outcome", outcome),
        "since": _text("since", since),
        "until": _text("until", until),
        "request_id": _text("request_id", request_id),
    }
    if values["outcome"] is not None:
        if values["outcome"] not in OUTCOMES:
            raise invalid(
                "audit.outcome_invalid",
                "结果须为 allowed（允许）或 refused（拒绝）",
                "outcome must be allowed or refused",
                "outcome",
            )
        values["outcome"] = OUTCOMES[values["outcome"]]
    since_at = _time_bound("since", values["since"], end=False) if values["since"] else None
    until_at = _time_bound("until", values["until"], end=True) if values["until"] else None
    if since_at and until_at and since_at >= until_at:
        raise invalid(
            "audit.range_invalid",
            "开始时间须早于结束时间",
            "since must come before until",
            "until",
        )
    return Filters(**values, since_at=since_at, until_at=until_at)


def _match(column: Any, value: str, prefix_on_dot: bool = False) -> ColumnElement[bool]:
    """Exact match, or a prefix match for ``value*`` (and, for actions, ``value.``)."""
    if value.endswith("*"):
        return column.startswith(value.rstrip("*"), autoescape=True)
    if prefix_on_dot and value.endswith("."):
        return column.startswith(value, autoescape=True)
    return column == value


def conditions(principal: Principal, filters: Filters) -> list[ColumnElement[bool]]:
    """The WHERE clause of a search: the caller's scope and the filters."""
    where: list[ColumnElement[bool]] = []
    allowed = scope(principal)
    if allowed is not None:
        where.append(allowed)
    f = filters
    if f.department:
        where.append(or_(AuditRecord.actor_department == f.department, AuditRecord.subject_department == f.department))
    if f.actor:
        where.append(_match(AuditRecord.actor, f.actor))
    if f.resource:
        where.append(_match(AuditRecord.resource, f.resource))
    if f.action:
        where.append(_match(AuditRecord.action, f.action, prefix_on_dot=True))
    if f.outcome:
        where.append(AuditRecord.outcome == f.outcome)
    if f.request_id:
        where.append(AuditRecord.request_id == f.request_id)
    if f.since_at:
        where.append(AuditRecord.occurred_at >= f.since_at)
    if f.until_at:
        where.append(AuditRecord.occurred_at < f.until_at)
    return where


# ---------------------------------------------------------------- search


@dataclass
class Found:
    records: list[AuditRecord]
    next_cursor: str | None


def parse_cursor(cursor: str | None) -> int | None:
    """A cursor is the sequence number of the last record of the previous page."""
    if cursor is None or not cursor.strip():
        return None
    text = cursor.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 19 or not 0 < int(text) <= MAX_ID:
        raise invalid(
            "audit.cursor_invalid",
            "翻页游标无效，请从第一页重新检索",
            "Invalid cursor; search again from the first page",
            "cursor",
        )
    return int(text)


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise invalid(
            "audit.limit_invalid",
            f"每页条数须在 1 到 {MAX_LIMIT} 之间",
            f"limit must be between 1 and {MAX_LIMIT}",
            "limit",
        )
    return limit


def search(
    session: Session,
    principal: Principal,
    filters: Filters,
    *,
    cursor: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> Found:
    """Newest first, ``limit`` at a time; ``next_cursor`` continues (None: no more)."""
    where = conditions(principal, filters)
    limit = check_limit(limit)
    after = parse_cursor(cursor)
    if after is not None:
        where.append(AuditRecord.seq < after)
    stmt = select(AuditRecord).where(*where).order_by(AuditRecord.seq.desc()).limit(limit + 1)
    records = list(session.scalars(stmt))
    more = len(records) > limit
    records = records[:limit]
    return Found(records, str(records[-1].seq) if more and records else None)


def get_record(session: Session, principal: Principal, seq: int) -> AuditRecord:
    """One record within the caller's scope; 404 for one that is not (or does not exist)."""
    allowed = scope(principal)
    if not 0 < seq <= MAX_ID:
        raise NotFound("审计记录", "Audit record")
    stmt = select(AuditRecord).where(AuditRecord.seq == seq)
    if allowed is not None:
        stmt = stmt.where(allowed)
    record = session.scalar(stmt)
    if record is None:
        raise NotFound("审计记录", "Audit record")
    return record


# ---------------------------------------------------------------- export


@dataclass(frozen=True)
class ExportPlan:
    """What an export will hold, fixed before the first byte leaves: the records up to
    ``upto`` (the trail is append-only, so that set can no longer change)."""

    principal: Principal
    filters: Filters
    upto: int
    count: int


def plan_export(session: Session, principal: Principal, filters: Filters) -> ExportPlan:
    where = conditions(principal, filters)
    upto = session.scalar(select(func.max(AuditRecord.seq))) or 0
    count = session.scalar(select(func.count()).select_from(AuditRecord).where(*where, AuditRecord.seq <= upto)) or 0
    if count > EXPORT_CAP:
        raise invalid(
            "audit.export_too_large",
            f"符合条件的记录有 {count} 条，超过单次导出上限 {EXPORT_CAP} 条，请缩小时间范围或增加筛选条件",
            f"{count} records match, more than the {EXPORT_CAP} one export may hold; narrow the filters",
        )
    return ExportPlan(principal, filters, upto, count)


COLUMNS = tuple(c.name for c in AuditRecord.__table__.columns)


def iter_export(url: str, plan: ExportPlan, chunk: int = EXPORT_CHUNK) -> Iterator[Row[Any]]:
    """The planned records, newest first, read ``chunk`` at a time by keyset — each chunk
    in a short transaction of its own, so a long download holds no snapshot open and
    memory stays flat whatever the size."""
    where = conditions(plan.principal, plan.filters)
    columns = [getattr(AuditRecord, name) for name in COLUMNS]
    below = plan.upto + 1
    with session_factory(url)() as session:
        while True:
            stmt = select(*columns).where(*where, AuditRecord.seq < below).order_by(AuditRecord.seq.desc()).limit(chunk)
            rows = session.execute(stmt).all()
            session.rollback()  # end the read transaction between chunks
            yield from rows
            if len(rows) < chunk:
                return
            below = rows[-1].seq
