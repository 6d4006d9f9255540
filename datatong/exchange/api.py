"""HTTP API of the exchange (/api/v1/exchange): query and verification of an entry's data.

Each response carries a signed receipt (``X-Datatong-Receipt``, 电子凭证) binding the
request, the exact response body, the time and the grant; the request context comes from
the ``X-Datatong-*`` headers (context.py)."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from datatong.catalog.models import CatalogEntry
from datatong.errors import AppError
from datatong.exchange import metrics, receipts, service
from datatong.exchange.context import RequestContext, exchange_context
from datatong.exchange.readers import SourceReader
from datatong.exchange.schemas_calls import QueryIn, QueryOut, VerifyIn, VerifyOut
from datatong.orgs.service import Principal
from datatong.settings import Settings
from datatong.web.deps import get_principal, get_session, get_settings_dep

router = APIRouter(prefix="/api/v1/exchange", tags=["交换 exchange"])
Db = Depends(get_session)
Who = Depends(get_principal)
Conf = Depends(get_settings_dep)
Ctx = Depends(exchange_context)


def reader_for_entry(session: Session, settings: Any, entry: CatalogEntry) -> tuple[SourceReader, str]:
    """The entry's data source as a reader, and its key item."""
    from datatong.exchange import readers, sources

    source = sources.source_for_entry(session, entry.id)
    if source is None or not source.enabled:
        raise AppError(
            "exchange.no_source",
            "该信息资源尚未接入数据源，暂不能交换",
            "This resource has no data source connected yet",
            status_code=409,
        )
    reader = readers.reader_for(session, settings, source)
    return reader, reader.key_item


def _canonical(body: Any) -> bytes:
    """The request body as the receipt binds it: canonical JSON of what was accepted."""
    return json.dumps(body.model_dump(mode="json"), ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def _signed(
    request: Request,
    body_bytes: bytes,
    result: service.Result,
    ctx: RequestContext,
    settings: Settings,
    principal: Principal,
    request_body: bytes,
) -> Response:
    request_hash = receipts.hash_request(request.method, request.url.path, str(request.url.query), request_body)
    receipt = receipts.make_receipt(
        settings.keys_path,
        request_hash,
        body_bytes,
        result.decision.grant_id,
        principal.department_code or "",
        result.entry_code,
        ctx,
    )
    return Response(body_bytes, media_type="application/json", headers={"X-Datatong-Receipt": receipt.header_value()})


def _run(service_name: str, call: Any) -> service.Result:
    started = time.perf_counter()
    try:
        result: service.Result = call()
    except service.Refused as exc:
        metrics.observe_call(service_name, "refused", time.perf_counter() - started, reason=exc.decision.reason)
        raise
    metrics.observe_call(service_name, "allowed", time.perf_counter() - started, rows=result.rows)
    return result


@router.post(
    "/entries/{entry_code}/query", response_model=QueryOut, summary="查询接口：按授权信息项筛选、分页，自动脱敏"
)
def query(
    entry_code: str,
    body: QueryIn,
    request: Request,
    session: Session = Db,
    principal: Principal = Who,
    settings: Settings = Conf,
    ctx: RequestContext = Ctx,
) -> Response:
    raw = _canonical(body)
    entry = service.entry_by_code(session, entry_code)
    result = _run(
        "query",
        lambda: service.query(
            session,
            settings,
            principal,
            reader_for_entry,
            entry=entry,
            ctx=ctx,
            items=body.items,
            filters=[f.model_dump() for f in body.filters],
            after=body.after,
            limit=body.limit,
        ),
    )
    data = json.dumps(result.body, ensure_ascii=False, separators=(",", ":")).encode()
    return _signed(request, data, result, ctx, settings, principal, raw)


@router.post(
    "/entries/{entry_code}/verify", response_model=VerifyOut, summary="查询核验：比对申报值，只返回一致/不一致"
)
def verify(
    entry_code: str,
    body: VerifyIn,
    request: Request,
    session: Session = Db,
    principal: Principal = Who,
    settings: Settings = Conf,
    ctx: RequestContext = Ctx,
) -> Response:
    raw = _canonical(body)
    entry = service.entry_by_code(session, entry_code)
    result = _run(
        "verify",
        lambda: service.verify(
            session,
            settings,
            principal,
            reader_for_entry,
            entry=entry,
            ctx=ctx,
            subjects=[s.model_dump() for s in body.subjects],
        ),
    )
    data = json.dumps(result.body, ensure_ascii=False, separators=(",", ":")).encode()
    return _signed(request, data, result, ctx, settings, principal, raw)


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
    a bulk export is covered by its audit records (start and end)."""
    from datatong.exchange import bulk

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
        "Cache-Control": "no-store",
    }
    if started_export.decision.grant_id is not None:
        headers["X-Datatong-Grant"] = str(started_export.decision.grant_id)
    return StreamingResponse(started_export.chunks, media_type=started_export.media_type, headers=headers)
