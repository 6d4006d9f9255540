"""HTTP API of bulk exchange (批量交换): the streaming export of an entry and the signed
manifest of a finished export.

The export has no receipt header (the body is not known when the headers go out); instead
it names its record in ``X-Datatong-Export``, and once the stream has ended
``GET /api/v1/exchange/exports/{id}/manifest`` gives the rows, the bytes and the SHA-256 of
exactly what was sent, signed with the platform's key (receipts.sign_manifest)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy.orm import Session

from datatong.catalog.models import CatalogEntry
from datatong.errors import AppError, NotFound, Unauthenticated
from datatong.exchange import bulk, metrics, receipts, service
from datatong.exchange.api import reader_for_entry
from datatong.exchange.context import RequestContext, exchange_context
from datatong.exchange.models import ExportRecord
from datatong.orgs.models import Role
from datatong.orgs.service import Principal
from datatong.settings import Settings
from datatong.web.deps import get_principal, get_session, get_settings_dep

router = APIRouter(prefix="/api/v1/exchange", tags=["交换 exchange"])
Db = Depends(get_session)
Who = Depends(get_principal)
Conf = Depends(get_settings_dep)
Ctx = Depends(exchange_context)


@router.get(
    "/entries/{entry_code}/export",
    summary="批量交换：流式导出 CSV / JSON Lines / Parquet，可断点续传",
    response_class=StreamingResponse,
)
def export(
    entry_code: str,
    fmt: str = Query("csv", alias="format", description="csv | jsonl | parquet"),
    items: list[str] | None = Query(None, description="data items (repeat the parameter); none: all granted"),
    after: str | None = Query(None, description="resume after this key (the last complete row stored)"),
    session: Session = Db,
    principal: Principal = Who,
    settings: Settings = Conf,
    ctx: RequestContext = Ctx,
) -> StreamingResponse:
    """Refusals and errors are JSON before any byte; the audit record is written before
    the first byte. No receipt header: the body is not known when the headers go out —
    ``X-Datatong-Export`` names the export, whose signed manifest (SHA-256 of the body)
    can be fetched when the stream has ended."""
    entry = service.entry_by_code(session, entry_code)
    started = time.perf_counter()
    try:
        started_export = bulk.export(
            session,
            settings,
            principal,
            reader_for_entry,
            entry=entry,
            ctx=ctx,
            fmt=fmt,
            items=items,
            after=after,
        )
    except service.Refused as exc:
        metrics.observe_call("export", "refused", time.perf_counter() - started, reason=exc.decision.reason)
        raise
    headers = {
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(started_export.filename)}",
        "X-Datatong-Resume": started_export.resume,
        "X-Datatong-Items": ",".join(quote(i, safe="") for i in started_export.items),
        bulk.EXPORT_HEADER: started_export.export_id,
        "Cache-Control": "no-store",
    }
    if started_export.decision.grant_id is not None:
        headers["X-Datatong-Grant"] = str(started_export.decision.grant_id)
    return StreamingResponse(started_export.chunks, media_type=started_export.media_type, headers=headers)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite gives naive UTC back
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _may_read(principal: Principal, record: ExportRecord) -> bool:
    """The department that made the export; the platform admin and auditors (oversight)."""
    if principal.is_platform_admin or (principal.kind == "user" and principal.role == Role.AUDITOR):
        return True
    return principal.department_id is not None and principal.department_id == record.department_id


@router.get("/exports/{export_id}/manifest", summary="批量交换导出清单：行数、字节数、SHA-256，平台签名")
def manifest(
    export_id: str,
    session: Session = Db,
    principal: Principal = Who,
    settings: Settings = Conf,
) -> JSONResponse:
    """409 ``exchange.export_incomplete`` while the export runs or when it broke off;
    another department's export is 404, like one that does not exist."""
    if not principal.is_authenticated:
        raise Unauthenticated()
    record = session.get(ExportRecord, export_id)
    if record is None or not _may_read(principal, record):
        raise NotFound("导出记录", "Export")
    if record.status != "complete":
        raise AppError(
            "exchange.export_incomplete",
            f"该导出尚未完成（{'进行中' if record.status == 'running' else '已中断'}），没有导出清单；请重新导出",
            f"The export is not complete ({record.status}): it has no manifest; export again",
            status_code=409,
        )
    entry = session.get(CatalogEntry, record.entry_id)
    doc: dict[str, Any] = {
        "export_id": record.id,
        "entry": entry.code if entry is not None else None,
        "format": record.format,
        "items": json.loads(record.items),
        "masked": json.loads(record.masked),
        "after": record.after,
        "rows": record.rows,
        "bytes": record.bytes,
        "sha256": record.sha256,
        "started_at": _iso(record.started_at),
        "finished_at": _iso(record.finished_at),
        "status": record.status,
        "grant_id": record.grant_id,
    }
    return JSONResponse(receipts.sign_manifest(settings.keys_path, doc), headers={"Cache-Control": "no-store"})
