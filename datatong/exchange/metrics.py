"""Prometheus metrics of the exchange and of HTTP traffic, served at ``/metrics``
(datatong/web/health.py).

A registry of our own (``REGISTRY``), not prometheus-client's global default, so that
several apps in one process (the test suite) and libraries registering their own
collectors never collide. Labels are bounded: services are a fixed few names, refusal
reasons are ``authorize`` codes, and HTTP requests are labelled by route template
(``/api/v1/exchange/entries/{entry_code}/query``), never by raw path.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = CONTENT_TYPE_LATEST

# Calls answer in milliseconds; the tail matters up to seconds (bulk pages, slow sources).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

CALLS = Counter(
    "datatong_exchange_calls",
    "Exchange calls by service and outcome (allowed, refused, error)",
    ["service", "outcome"],
    registry=REGISTRY,
)
ROWS = Counter("datatong_exchange_rows", "Rows returned by exchange calls", ["service"], registry=REGISTRY)
REFUSALS = Counter(
    "datatong_exchange_refusals",
    "Refused exchange calls by service and reason code",
    ["service", "reason"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "datatong_exchange_latency_seconds",
    "Time to serve an exchange call",
    ["service"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
PATHS = Counter(
    "datatong_exchange_verify_path",
    "Verification calls answered from memory on the event loop or in a worker thread",
    ["path"],
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "datatong_http_requests",
    "HTTP requests by method, route template and status",
    ["method", "route", "status"],
    registry=REGISTRY,
)


@lru_cache(maxsize=1024)
def child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, remembered: the lookup costs more than the increment,
    and the label sets are few (services, outcomes, reason codes, route templates)."""
    return metric.labels(*labels)


def observe_call(service: str, outcome: str, seconds: float, rows: int = 0, reason: str | None = None) -> None:
    """Count one exchange call of ``service`` (query, verify, bulk, subscription …):
    ``outcome`` allowed / refused / error, its duration, rows returned and, for a
    refusal, the reason code."""
    child(CALLS, service, outcome).inc()
    child(LATENCY, service).observe(seconds)
    if rows:
        child(ROWS, service).inc(rows)
    if reason is not None:
        child(REFUSALS, service, reason).inc()


def exposition() -> bytes:
    return generate_latest(REGISTRY)


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    if isinstance(path, str) and path:
        return path
    root = scope.get("root_path", "")
    raw = scope.get("path", "")
    if raw.startswith(root + "/static/"):
        return "/static"
    return "<unmatched>"


class HttpMetricsMiddleware:
    """Counts every HTTP request by method, route template and status (a pure ASGI
    middleware: a few microseconds per request). Methods other than the usual ones are
    counted as OTHER so a client cannot grow the label set."""

    _METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            method = scope.get("method", "GET")
            child(HTTP_REQUESTS, method if method in self._METHODS else "OTHER", _route_of(scope), str(status)).inc()
