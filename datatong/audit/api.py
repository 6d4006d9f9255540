"""HTTP API of the audit trail (/api/v1/audit): search, one record, export.

Reading the trail is itself recorded in it, through the audit writer and before the
answer leaves (fail closed): every search (``audit.search``), single record
(``audit.read``) and export (``audit.export`` — recorded even where the benchmark turns
reads off, and committed before the first byte of the file).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from datatong.audit import export, query
from datatong.audit.labels import BEIJING
from datatong.audit.schemas import AuditPage, AuditRecordOut
from datatong.audit.service import make_event
from datatong.audit.writer import log_access, writer_for
from datatong.errors import invalid
from datatong.orgs.models import Department
from datatong.orgs.service import Principal
from datatong.web.deps import get_principal, get_session

router = APIRouter(prefix="/api/v1/audit", tags=["审计 audit"])
Db = Depends(get_session)
Who = Depends(get_principal)
FORMATS = tuple(export.MEDIA)


class FilterParams:
    """The search filters shared by the search and the export (checked in query.py)."""

    def __init__(
        self,
        department: str | None = Query(None, description="部门代码：操作者部门或数据所属部门为该部门"),
        actor: str | None = Query(None, description="操作者（用户名或应用编号）；以 * 结尾为前缀匹配"),
        resource: str | None = Query(None, description="资源，如信息资源代码、user:ga_officer；以 * 结尾为前缀匹配"),
        action: str | None = Query(
            None, description="操作代码，如 catalog.entry.update；以 . 或 * 结尾为前缀匹配，如 catalog."
        ),
        outcome: str | None = Query(None, description="allowed（允许）或 refused（拒绝）"),
        since: str | None = Query(
            None, description="开始时间（含）：日期 2026-11-22 或时间 2026-11-22T09:30:00+08:00；不带时区按北京时间"
        ),
        until: str | None = Query(None, description="结束时间（含）：日期表示当天结束；不带时区按北京时间"),
        request_id: str | None = Query(None, description="请求编号"),
    ) -> None:
        self.raw = {
            "department": department,
            "actor": actor,
            "resource": resource,
            "action": action,
            "outcome": outcome,
            "since": since,
            "until": until,
            "request_id": request_id,
        }

    def parse(self) -> query.Filters:
        return query.parse_filters(**self.raw)


Filters = Depends(FilterParams)


def search_detail(filters: query.Filters, **extra: Any) -> dict[str, Any]:
    return {"filters": filters.params(), **{k: v for k, v in extra.items() if v is not None}}


@router.get("/records", response_model=AuditPage, summary="检索审计日志（最新在前，游标翻页）")
def search_records(
    request: Request,
    params: FilterParams = Filters,
    cursor: str | None = Query(None, description="上一页返回的 next_cursor"),
    limit: int = Query(query.DEFAULT_LIMIT, ge=1, le=query.MAX_LIMIT, description="每页条数，1–500"),
    session: Session = Db,
    principal: Principal = Who,
) -> AuditPage:
    query.require_reader(principal)  # who asks comes before what they ask
    filters = params.parse()
    found = query.search(session, principal, filters, cursor=cursor, limit=limit)
    items = [AuditRecordOut.of(r) for r in found.records]
    log_access(
        request.app.state.settings,
        principal,
        "audit.search",
        subject_department=filters.department,
        rows=len(items),
        detail=search_detail(filters, cursor=cursor),
    )
    return AuditPage(items=items, next_cursor=found.next_cursor)


@router.get("/records/{seq}", response_model=AuditRecordOut, summary="一条审计记录（超出可见范围时为 404）")
def get_record(request: Request, seq: int, session: Session = Db, principal: Principal = Who) -> AuditRecordOut:
    found = query.get_record(session, principal, seq)
    settings = request.app.state.settings
    log_access(settings, principal, "audit.read", resource=f"audit:{seq}", subject_department=found.subject_department)
    return AuditRecordOut.of(found)


def attachment_headers(filename: str, fallback: str) -> dict[str, str]:
    """The Chinese name in filename* (RFC 5987), with an ASCII fallback."""
    return {"Content-Disposition": f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename)}"}


def department_names(session: Session) -> dict[str, str]:
    return {code: name for code, name in session.execute(select(Department.code, Department.name))}


@router.get(
    "/export",
    response_class=StreamingResponse,
    summary="导出审计日志（csv 或 xlsx，与检索相同的筛选条件，最多 100 万条）",
    responses={200: {"content": {export.XLSX_MIME: {}, "text/csv": {}}}},
)
def export_records(
    request: Request,
    params: FilterParams = Filters,
    format: str = Query("csv", description="csv 或 xlsx"),
    session: Session = Db,
    principal: Principal = Who,
) -> StreamingResponse:
    query.require_reader(principal)
    if format not in FORMATS:
        raise invalid(
            "audit.export_format_invalid",
            "format 须为 csv 或 xlsx",
            "format must be csv or xlsx",
            "format",
        )
    filters = params.parse()
    plan = query.plan_export(session, principal, filters)
    departments = department_names(session)
    settings = request.app.state.settings
    event = make_event(
        principal,
        "audit.export",
        subject_department=filters.department,
        rows=plan.count,
        detail=search_detail(filters, format=format, upto=plan.upto),
    )
    # Committed before the first byte leaves; AuditUnavailable (503) stops the export.
    writer_for(settings.database_url, settings.keys_path, settings.audit_checkpoint_every).write(event)
    stamp = datetime.now(BEIJING).strftime("%Y%m%d")
    return StreamingResponse(
        export.chunks(format, query.iter_export(settings.database_url, plan), departments),
        media_type=export.MEDIA[format],
        headers=attachment_headers(f"审计日志-{stamp}.{format}", f"audit-{stamp}.{format}"),
    )
