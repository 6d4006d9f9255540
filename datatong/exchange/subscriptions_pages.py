"""Pages of subscriptions (数据交换 › 订阅): the department's subscriptions with the form
to subscribe (the webhook's signing secret shown once, on the answer), and one
subscription with pause/resume/cancel, replay from an offset and its dead letters.

Thin like every page: the rules are ``datatong.exchange.subscriptions``'s (the same
functions the API calls); the request context the API takes from headers comes from the
form and is checked by the same ``context_from_headers``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.datastructures import FormData

from datatong.errors import AppError
from datatong.exchange import subscriptions
from datatong.exchange.bus import bus_for
from datatong.exchange.context import CASE, OPERATOR, PURPOSE, SYSTEM, RequestContext, context_from_headers
from datatong.exchange.models import SUBSCRIPTION_MODES, SUBSCRIPTION_STATUS, Subscription
from datatong.exchange.sources_pages import FormInvalid, require_exchange_user, shown
from datatong.orgs.models import Department
from datatong.sharing.models import PURPOSE_KINDS
from datatong.sharing.needs_pages import split_items
from datatong.web.pages import CheckedForm, Page, PageDep, PageRoute, error_map, form_text, place_errors

router: APIRouter = APIRouter(route_class=PageRoute, include_in_schema=False)

SUBSCRIBE_FIELDS = ["entry", "mode", "url", "items", "system", "operator", "purpose", "case"]
# The request-context headers, by the form field that fills them.
CONTEXT_FIELDS = {SYSTEM: "system", OPERATOR: "operator", PURPOSE: "purpose", CASE: "case"}
LIMITS = {"entry": 64, "url": 500, "items": 20000}


def sub_row(page: Page, sub: Subscription) -> dict[str, Any]:
    return {
        "s": sub,
        "entry": subscriptions.entry_code_of(page.session, sub),
        "mode_label": SUBSCRIPTION_MODES.get(sub.mode, sub.mode),
        "status_label": SUBSCRIPTION_STATUS.get(sub.status, sub.status),
        "items": json.loads(sub.items),
        "purpose_label": PURPOSE_KINDS.get(sub.purpose, sub.purpose),
    }


def _defaults(page: Page) -> dict[str, Any]:
    """The context fields a clerk would type: the department as the system, oneself as the operator."""
    dept = page.session.get(Department, page.principal.department_id) if page.principal.department_id else None
    return {
        "mode": "webhook",
        "system": dept.name if dept else "",
        "operator": page.principal.display_name,
        "purpose": "",
    }


def render_list(
    page: Page, values: dict[str, Any] | None = None, errors: dict[str, list[str]] | None = None, status_code: int = 200
) -> Response:
    errors = place_errors(errors or {}, set(SUBSCRIBE_FIELDS))
    error_list = [(n, m) for n in ["", *SUBSCRIBE_FIELDS] for m in errors.get(n, [])]
    found = subscriptions.list_for(page.session, page.principal)
    return page.render(
        "exchange/subscriptions.html",
        status_code=status_code,
        rows=[sub_row(page, s) for s in found],
        values=values if values is not None else _defaults(page),
        errors=errors,
        error_list=error_list,
        modes=SUBSCRIPTION_MODES,
        purpose_kinds=PURPOSE_KINDS,
    )


@router.get("/exchange/subscriptions")
def subscriptions_page(page: Page = PageDep) -> Response:
    require_exchange_user(page)
    return render_list(page)


def _context(values: dict[str, Any], page: Page) -> RequestContext:
    """The request context from the form, checked as the API checks its headers ("%" is
    escaped: a form's text is not percent-encoded)."""
    headers = {h: str(values[f]).replace("%", "%25") for h, f in CONTEXT_FIELDS.items() if values[f]}
    try:
        return context_from_headers(headers, page.principal)
    except AppError as exc:
        exc.field = CONTEXT_FIELDS.get(exc.field or "", exc.field)
        raise


@router.post("/exchange/subscriptions")
def subscribe_post(form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    require_exchange_user(page)
    values: dict[str, Any] = {name: form_text(form, name) for name in SUBSCRIBE_FIELDS}
    try:
        for name, limit in LIMITS.items():
            if len(values[name]) > limit:
                raise FormInvalid(name, f"不能超过 {limit} 个字符")
        if not values["entry"]:
            raise FormInvalid("entry", "请填写信息资源代码")
        ctx = _context(values, page)
        sub, secret = subscriptions.create(
            page.session,
            page.settings,
            bus_for(page.settings),
            page.principal,
            entry_code=values["entry"],
            mode=values["mode"],
            url=values["url"] or None,
            items=split_items(values["items"]) or None,
            ctx=ctx,
        )
    except AppError as exc:
        if exc.status_code == 401:
            raise
        page.rollback()
        return render_list(page, values, error_map(exc), 422 if exc.status_code == 404 else exc.status_code)
    response = page.render("exchange/subscribed.html", status_code=201, r=sub_row(page, sub), secret=secret)
    response.headers["Cache-Control"] = "no-store"  # the secret is shown once, never cached
    return response


# ---------------------------------------------------------------- one subscription


def render_subscription(
    page: Page, subscription_id: int, status_code: int = 200, action_errors: dict[str, str] | None = None
) -> Response:
    sub = subscriptions.get(page.session, page.principal, subscription_id)
    return page.render(
        "exchange/subscription.html",
        status_code=status_code,
        r=sub_row(page, sub),
        sub=sub,
        dead=subscriptions.dead_letters(page.session, page.principal, subscription_id),
        action_errors=action_errors or {},
    )


@router.get("/exchange/subscriptions/{subscription_id:int}")
def subscription_page(subscription_id: int, page: Page = PageDep) -> Response:
    require_exchange_user(page)
    return render_subscription(page, subscription_id)


def _step(page: Page, subscription_id: int, group: str, run: Callable[[], Subscription], done: str) -> Response:
    """Run one action; a refused one is shown by the form that asked."""
    require_exchange_user(page)
    try:
        run()
    except AppError as exc:
        if not shown(exc):
            raise
        page.rollback()
        return render_subscription(page, subscription_id, exc.status_code, {group: exc.message})
    page.flash(done)
    return page.redirect(f"/exchange/subscriptions/{subscription_id}")


@router.post("/exchange/subscriptions/{subscription_id:int}/pause")
def pause_post(subscription_id: int, form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    return _step(
        page,
        subscription_id,
        "status",
        lambda: subscriptions.set_paused(page.session, page.principal, subscription_id, True),
        "订阅已暂停",
    )


@router.post("/exchange/subscriptions/{subscription_id:int}/resume")
def resume_post(subscription_id: int, form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    return _step(
        page,
        subscription_id,
        "status",
        lambda: subscriptions.set_paused(page.session, page.principal, subscription_id, False),
        "订阅已恢复",
    )


@router.post("/exchange/subscriptions/{subscription_id:int}/cancel")
def cancel_post(subscription_id: int, form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    if form_text(form, "confirm") != "1":
        require_exchange_user(page)
        return render_subscription(page, subscription_id, 422, {"cancel": "请勾选确认后再取消订阅"})
    return _step(
        page,
        subscription_id,
        "cancel",
        lambda: subscriptions.cancel(page.session, page.principal, subscription_id),
        "订阅已取消",
    )


@router.post("/exchange/subscriptions/{subscription_id:int}/replay")
def replay_post(subscription_id: int, form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    text = form_text(form, "offset")

    def run() -> Subscription:
        if not text.isdigit() or len(text) > 18:
            raise FormInvalid("offset", "偏移量应为不小于 0 的整数")
        return subscriptions.replay(page.session, bus_for(page.settings), page.principal, subscription_id, int(text))

    return _step(page, subscription_id, "replay", run, f"将从偏移量 {text} 之后重新推送")
