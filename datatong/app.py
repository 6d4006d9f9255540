"""The FastAPI application: API routers, pages, error handlers, schema upgrade on start."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from datatong import __version__
from datatong.audit.writer import writer_for
from datatong.db import session_scope, upgrade
from datatong.exchange.fastlane import VerifyFastLane
from datatong.exchange.metrics import HttpMetricsMiddleware
from datatong.keys import keyring
from datatong.settings import Settings, get_settings
from datatong.web import errors
from datatong.web.context import RequestContextMiddleware
from datatong.web.security import SecurityHeadersMiddleware

STATIC = Path(__file__).parent / "web" / "static"


def prepare_database(settings: Settings) -> None:
    """Upgrade the schema and seed what every platform needs (idempotent); make the
    platform's signing key on first start."""
    from datatong.audit.service import configure_chain
    from datatong.catalog.service import seed_classes
    from datatong.sharing import calendar, workdays

    upgrade(settings.database_url)
    workdays.set_fallback(settings.calendar_fallback)
    with session_scope(settings.database_url) as session:
        seed_classes(session)
        configure_chain(session, settings.audit_hash)
        calendar.load(session)
    keyring(settings.keys_path)


def _lifespan(settings: Settings) -> Any:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # The audit writer also signs checkpoints when idle, so it runs from the start.
        writer = writer_for(settings.database_url, settings.keys_path, settings.audit_checkpoint_every)
        writer.start()
        yield
        writer.stop()

    return lifespan


def create_app(settings: Settings | None = None, *, migrate: bool = True) -> FastAPI:
    settings = settings or get_settings()
    if migrate:
        prepare_database(settings)
    app = FastAPI(
        title="数据通 Datatong API",
        version=__version__,
        description="政务信息资源共享交换平台。错误统一返回 {error: {code, message, message_en}}。",
        lifespan=_lifespan(settings),
    )
    app.state.settings = settings
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.secret_key,
        session_cookie="datatong_session",
        max_age=settings.session_hours * 3600,
        same_site="lax",
        https_only=settings.cookie_secure,
    )
    app.add_middleware(VerifyFastLane)  # exchange/fastlane.py: the usual verification, before the router
    app.add_middleware(RequestContextMiddleware)
    app.add_middleware(SecurityHeadersMiddleware, settings=settings)  # web/security.py
    app.add_middleware(HttpMetricsMiddleware)  # exchange/metrics.py: requests by route template
    errors.install(app)
    from datatong.audit import api as audit_api
    from datatong.audit import pages as audit_pages
    from datatong.catalog import api as catalog_api
    from datatong.catalog import ckan, dcat, files_api
    from datatong.exchange import api as exchange_api
    from datatong.exchange import bulk_api, sources_api, subscriptions_api
    from datatong.exchange import sources_pages as exchange_sources_pages
    from datatong.exchange import subscriptions_pages as exchange_subscriptions_pages
    from datatong.orgs import api as orgs_api
    from datatong.sharing import admin_pages as sharing_admin_pages
    from datatong.sharing import api as sharing_api
    from datatong.sharing import inbox_api, inbox_pages, needs_api, needs_pages
    from datatong.sharing import pages as sharing_pages
    from datatong.web import health, pages, wellknown

    # Exchange calls first: a request is matched against routes in order, and these are
    # the hot ones (about 0.5 ms saved per call against ~20 routers before them).
    for module in (
        exchange_api,
        bulk_api,
        orgs_api,
        catalog_api,
        files_api,
        dcat,
        ckan,
        wellknown,
        health,
        audit_api,
        pages,
        audit_pages,
        sharing_api,
        sharing_pages,
        inbox_api,
        inbox_pages,
        needs_pages,
        sharing_admin_pages,
        exchange_sources_pages,
        exchange_subscriptions_pages,
        sources_api,
        subscriptions_api,
    ):
        app.include_router(module.router)
    app.include_router(needs_api.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
