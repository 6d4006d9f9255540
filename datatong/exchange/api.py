"""HTTP API of the exchange (/api/v1/exchange): query and verification of an entry's data.

Each response carries a signed receipt (``X-Datatong-Receipt``, 电子凭证) binding the
request, the exact response body, the time and the grant; the request context comes from
the ``X-Datatong-*`` headers (context.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from datatong.catalog.models import CatalogEntry
from datatong.db import session_scope
from datatong.errors import AppError
from datatong.exchange import metrics, receipts, service
from datatong.exchange.context import (
    RequestContext,
    call_principal,
    context_from_headers,
    exchange_context,
    principal_in_memory,
)
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


@router.get("/ping", summary="连通性检查（不读数据库，不需登录）")
async def ping() -> dict[str, bool]:
    """A trivial answer through the whole middleware stack: the yardstick of the
    exchange benchmark (bench/exchange_verify.py) and a cheap liveness probe."""
    return {"ok": True}


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
async def query(entry_code: str, body: QueryIn, request: Request) -> Response:
    """Like ``verify``: async, its blocking work in one threadpool hop."""
    raw = _canonical(body)
    settings: Settings = request.app.state.settings
    result, principal, ctx = await run_in_threadpool(_query_now, request, settings, entry_code, body)
    data = json.dumps(result.body, ensure_ascii=False, separators=(",", ":")).encode()
    return _signed(request, data, result, ctx, settings, principal, raw)


def _query_now(
    request: Request, settings: Settings, entry_code: str, body: QueryIn
) -> tuple[service.Result, Principal, RequestContext]:
    with session_scope(settings.database_url) as session:
        principal = call_principal(request, session)
        ctx = context_from_headers(request.headers, principal)
        request.state.exchange_context = ctx
        target = service.target(session, settings, entry_code, reader_for_entry)
        result = _run(
            "query",
            lambda: service.query(
                session,
                settings,
                principal,
                reader_for_entry,
                entry=target,
                ctx=ctx,
                items=body.items,
                filters=[f.model_dump() for f in body.filters],
                after=body.after,
                limit=body.limit,
            ),
        )
    return result, principal, ctx


@router.post(
    "/entries/{entry_code}/verify", response_model=VerifyOut, summary="查询核验：比对申报值，只返回一致/不一致"
)
async def verify(entry_code: str, body: VerifyIn, request: Request) -> Response:
    """Async, with all its blocking work (token, entry, authorize, lookup, the audit
    record) in ONE threadpool hop: a sync route with sync dependencies takes one hop per
    dependency and one for itself, and at a few hundred calls a second those hops and
    their threads' fight for the GIL cost more than the call. The same checks, in the
    same order, as the dependencies would make them; the receipt is signed after the
    audit record is committed, as before. The usual call (a caller, entry and grant
    just seen) does not even take the hop: ``verify_in_memory``."""
    settings: Settings = request.app.state.settings
    answered = await verify_in_memory(request, settings, entry_code, body)
    if answered is not None:
        return answered
    metrics.child(metrics.PATHS, "thread").inc()
    subjects = [s.model_dump() for s in body.subjects]
    result, principal, ctx = await run_in_threadpool(_verify_now, request, settings, entry_code, subjects)
    data = json.dumps(result.body, ensure_ascii=False, separators=(",", ":")).encode()
    return _signed(request, data, result, ctx, settings, principal, _canonical(body))


async def verify_in_memory(
    request: Request,
    settings: Settings,
    entry_code: str,
    body: VerifyIn,
    headers: Mapping[str, str] | None = None,
) -> Response | None:
    """The usual call — a caller, an entry and a grant this process has just seen — on
    the event loop, without a thread (service.verify_in_memory): the signed answer, or
    None for anything else. ``headers``: the authorization and context headers by name,
    when the caller has them already (the fast lane reads them in one pass). The receipt
    is signed by the audit writer's thread once the record is committed."""
    headers = request.headers if headers is None else headers
    principal = await principal_in_memory(request, headers.get("authorization", ""))
    if principal is None:
        return None
    target = await service.target_in_memory(settings, entry_code, reader_for_entry)
    if target is None:
        return None
    ctx = context_from_headers(headers, principal)
    request.state.exchange_context = ctx
    request_hash = receipts.hash_request(request.method, request.url.path, str(request.url.query), _canonical(body))

    def seal(result: service.Result) -> Any:
        data = json.dumps(result.body, ensure_ascii=False, separators=(",", ":")).encode()
        claims, payload, key = receipts.unsigned_receipt(
            settings.keys_path,
            request_hash,
            data,
            result.decision.grant_id,
            principal.department_code or "",
            result.entry_code,
            ctx,
        )
        return lambda: (data, receipts.Receipt(claims, payload, key.sign(payload)))

    started = time.perf_counter()
    subjects = [s.model_dump() for s in body.subjects]
    result = await service.verify_in_memory(settings, principal, target, ctx=ctx, subjects=subjects, after_commit=seal)
    if result is None:
        return None
    metrics.observe_call("verify", "allowed", time.perf_counter() - started, rows=result.rows)
    data, receipt = result.sealed
    return Response(data, media_type="application/json", headers={"X-Datatong-Receipt": receipt.header_value()})


def _verify_now(
    request: Request, settings: Settings, entry_code: str, subjects: list[dict[str, Any]]
) -> tuple[service.Result, Principal, RequestContext]:
    # One transaction, committed on success and rolled back on any error (as get_session).
    with session_scope(settings.database_url) as session:
        principal = call_principal(request, session)
        ctx = context_from_headers(request.headers, principal)
        request.state.exchange_context = ctx
        target = service.target(session, settings, entry_code, reader_for_entry)
        result = _run(
            "verify",
            lambda: service.verify_target(session, settings, principal, target, ctx=ctx, subjects=subjects),
        )
    return result, principal, ctx
