"""Operations: ``/healthz`` for load balancers and ``/metrics`` for Prometheus.

``/healthz`` (anonymous) answers 200 with ``status`` ``ok`` (or ``degraded`` when the
database answers but something else does not) and 503 with ``down`` when the database
does not answer. Anonymous callers see only ``ok`` per check; a platform administrator
(Bearer token or page session) also sees the database's round trip in ms, the current
key id and the bus kind. No secrets, no URLs, no error texts.

``/metrics`` (Prometheus text format, datatong/exchange/metrics.py) is served
anonymously only to loopback callers that came without proxy headers
(``X-Forwarded-For``, ``Forwarded``, ``X-Real-IP``: a reverse proxy on the same host
would otherwise make everyone look local), or to anyone when ``DATATONG_METRICS_PUBLIC=1``;
otherwise a platform administrator's token is required (401 / 403).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text

from datatong.audit.writer import writer_for
from datatong.db import engine_for, session_factory
from datatong.errors import Forbidden, Unauthenticated
from datatong.exchange import metrics
from datatong.keys import signing_key
from datatong.orgs.service import ANONYMOUS, Principal
from datatong.settings import Settings
from datatong.web.deps import get_principal

router = APIRouter(tags=["运维 operations"])
_PROXY_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")


def _check_database(settings: Settings) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        with engine_for(settings.database_url).connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:  # noqa: BLE001 — any failure means "down"; the text may hold a URL
        return {"ok": False}
    return {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 2)}


def _check_audit_writer(settings: Settings) -> dict[str, Any]:
    """The group-commit writer runs (or has not been needed yet: it starts on the first
    write); whether it can commit depends on the database, checked above."""
    writer = writer_for(settings.database_url, settings.keys_path, settings.audit_checkpoint_every)
    thread = writer._thread  # noqa: SLF001 — read-only look at the writer's state
    return {"ok": thread is None or thread.is_alive()}


def _check_keys(settings: Settings) -> dict[str, Any]:
    try:
        return {"ok": True, "kid": signing_key(settings.keys_path).kid}
    except Exception:  # noqa: BLE001
        return {"ok": False}


def _bus_url(settings: Settings) -> str:
    return str(getattr(settings, "bus_url", None) or os.environ.get("DATATONG_BUS_URL") or "")


def _check_bus(settings: Settings, database_ok: bool) -> dict[str, Any]:
    url = _bus_url(settings)
    if not url.startswith("nats://"):
        # The outbox lives in the platform database.
        return {"ok": database_ok, "kind": "outbox"}
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 4222), timeout=0.5):
            pass
    except OSError:
        return {"ok": False, "kind": "nats"}
    return {"ok": True, "kind": "nats"}


def _caller(request: Request) -> Principal:
    """Who calls, without failing the probe: any trouble (no database, a bad token)
    counts as anonymous."""
    has_session = "session" in request.scope and request.session.get("uid")
    if "authorization" not in request.headers and not has_session:
        return ANONYMOUS
    try:
        session = session_factory(request.app.state.settings.database_url)()
        try:
            return get_principal(request, session)
        finally:
            session.close()
    except Exception:  # noqa: BLE001
        return ANONYMOUS


@router.get(
    "/healthz",
    response_class=JSONResponse,
    summary="健康检查（负载均衡用）",
    responses={503: {"description": "数据库不可用 (status: down)"}},
)
def healthz(request: Request) -> JSONResponse:
    """数据库、审计写入线程、签名密钥与消息总线的状态；数据库不可用时返回 503。"""
    settings: Settings = request.app.state.settings
    database = _check_database(settings)
    checks = {
        "database": database,
        "audit_writer": _check_audit_writer(settings),
        "keys": _check_keys(settings),
        "bus": _check_bus(settings, database["ok"]),
    }
    if not database["ok"]:
        status = "down"
    elif all(c["ok"] for c in checks.values()):
        status = "ok"
    else:
        status = "degraded"
    if not (database["ok"] and _caller(request).is_platform_admin):
        checks = {name: {"ok": c["ok"]} for name, c in checks.items()}
    return JSONResponse(
        {"status": status, "checks": checks},
        status_code=503 if status == "down" else 200,
        headers={"Cache-Control": "no-store"},
    )


def _is_local(request: Request) -> bool:
    if any(h in request.headers for h in _PROXY_HEADERS):
        return False
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus 指标",
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus 文本格式"}},
)
def prometheus_metrics(request: Request) -> Response:
    """Prometheus 文本格式的指标：本机回环地址或 DATATONG_METRICS_PUBLIC=1 时匿名可读，否则需平台管理员。"""
    if os.environ.get("DATATONG_METRICS_PUBLIC") != "1" and not _is_local(request):
        principal = _caller(request)
        if not principal.is_authenticated:
            raise Unauthenticated()
        if not principal.is_platform_admin:
            raise Forbidden("仅平台管理员可查看运行指标", "Only a platform administrator may read the metrics")
    return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE, headers={"Cache-Control": "no-store"})
