"""Inbox pages (站内消息): the signed-in user's messages, newest first; mark one or all read;
and the small unread-count badge the navigation fetches with htmx.

Thin like every page: the rules are ``datatong.sharing.notify``'s (a message is its
recipient's only; systems have no inbox).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from datatong.sharing import notify
from datatong.sharing.models import INBOX_KINDS
from datatong.web.pages import CheckedForm, Page, PageDep, PageRoute, form_text, require_login, safe_next

router: APIRouter = APIRouter(route_class=PageRoute, include_in_schema=False)

PAGE_SIZE = 50
MAX_OFFSET = 10**6


def _offset(raw: str | None) -> int:
    if raw and raw.isdigit() and len(raw) <= 7:
        return min(int(raw), MAX_OFFSET)
    return 0


def _back(form: FormData) -> str:
    """Back to the inbox view the form was posted from (only an inbox path)."""
    target = safe_next(form_text(form, "back"), "/sharing/inbox")
    return target if target.startswith("/sharing/inbox") else "/sharing/inbox"


@router.get("/sharing/inbox")
def inbox_page(request: Request, page: Page = PageDep) -> Response:
    require_login(page)
    unread_only = request.query_params.get("unread") == "1"
    offset = _offset(request.query_params.get("offset"))
    items, unread, total = notify.list_inbox(
        page.session, page.principal, unread_only=unread_only, limit=PAGE_SIZE, offset=offset
    )
    base = "/sharing/inbox" + ("?unread=1" if unread_only else "")
    joiner = "&" if unread_only else "?"
    context: dict[str, Any] = {
        "messages": items,
        "unread": unread,
        "total": total,
        "unread_only": unread_only,
        "kinds": INBOX_KINDS,
        "here": base + (f"{joiner}offset={offset}" if offset else ""),
        "prev_url": (base + (f"{joiner}offset={offset - PAGE_SIZE}" if offset > PAGE_SIZE else "")) if offset else None,
        "next_url": base + f"{joiner}offset={offset + PAGE_SIZE}" if offset + PAGE_SIZE < total else None,
        "offset": offset,
        "safe_link": lambda link: safe_next(link, "") or None,
    }
    return page.render("sharing/inbox/inbox.html", **context)


@router.get("/sharing/inbox/count")
def inbox_count(page: Page = PageDep) -> Response:
    """A tiny badge for the navigation (htmx). Empty for those without an inbox, so a
    fragment never turns into a login page inside the navigation bar."""
    p = page.principal
    if not p.is_authenticated or p.kind != "user":
        return HTMLResponse("", headers={"Vary": "HX-Request, Cookie", "Cache-Control": "no-store"})
    _items, unread, _total = notify.list_inbox(page.session, p, unread_only=True, limit=1)
    response = page.render("sharing/inbox/_count.html", unread=unread)
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/sharing/inbox/read-all")
def inbox_read_all(form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    require_login(page)
    updated = notify.mark_all_read(page.session, page.principal)
    page.flash(f"已将 {updated} 条消息标为已读" if updated else "没有未读消息")
    return page.redirect(_back(form))


@router.post("/sharing/inbox/{message_id:int}/read")
def inbox_read(message_id: int, form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    require_login(page)
    notify.mark_read(page.session, page.principal, message_id)
    page.flash("已标为已读")
    return page.redirect(_back(form))
