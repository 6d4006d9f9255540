"""Audit pages (审计日志): search the trail, load more, open one record, export.

Thin like every page: scope, filters and paging come from query.py, exactly as for the
API; the export buttons link to the API's export with the filters in force. Every
request that shows records is itself recorded (``audit.search`` / ``audit.read``),
which is why the filters apply on change, not on each key stroke.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from datatong.audit import labels, query
from datatong.audit.api import department_names, search_detail
from datatong.audit.writer import log_access
from datatong.errors import AppError
from datatong.orgs import service as orgs
from datatong.web.pages import Page, PageDep, PageRoute, require_login

router: APIRouter = APIRouter(route_class=PageRoute, include_in_schema=False)

PAGE_SIZE = 50
FORM_FIELDS = tuple(query.FILTER_LIMITS)


def pretty_json(text: str | None) -> str:
    """``detail`` indented for reading; text that is not JSON is shown as it is."""
    if not text:
        return ""
    try:
        return json.dumps(json.loads(text), ensure_ascii=False, indent=2, sort_keys=True)
    except ValueError:
        return text


def audit_url(path: str, params: dict[str, str], **extra: str) -> str:
    pairs = [(k, v) for k, v in {**params, **extra}.items() if v]
    return path + ("?" + urlencode(pairs) if pairs else "")


def _require_reader(page: Page) -> None:
    require_login(page)  # 401: the page sends the browser to the login form
    query.require_reader(page.principal)


def _helpers(page: Page) -> dict[str, Any]:
    return {
        "labels": labels,
        "pretty_json": pretty_json,
        "dept_names": department_names(page.session),
    }


def _action_options(current: str | None) -> list[tuple[str, list[tuple[str, str]]]]:
    groups = [(prefix, f"{label}（全部）") for prefix, label in labels.ACTION_GROUPS.items()]
    actions = [(code, f"{label}（{code}）") for code, label in labels.ACTION_LABELS.items()]
    options = [("按类别", groups), ("具体操作", actions)]
    if current and current not in labels.ACTION_GROUPS and current not in labels.ACTION_LABELS:
        options.insert(0, ("当前条件", [(current, current)]))
    return options


@router.get("/audit")
def audit_page(request: Request, page: Page = PageDep) -> Response:
    _require_reader(page)
    own_only = not query.reads_everything(page.principal)
    raw = {name: request.query_params.get(name, "") for name in FORM_FIELDS}
    if own_only:  # a department admin reads their own department's records only
        raw["department"] = ""
    cursor = request.query_params.get("cursor") or None
    error: AppError | None = None
    found = query.Found([], None)
    filters = query.Filters()
    try:
        filters = query.parse_filters(**raw)
        found = query.search(page.session, page.principal, filters, cursor=cursor, limit=PAGE_SIZE)
    except AppError as exc:
        if exc.status_code in (401, 403):
            raise
        error = exc
    if error is None:
        log_access(
            page.settings,
            page.principal,
            "audit.search",
            subject_department=filters.department,
            rows=len(found.records),
            detail=search_detail(filters, cursor=cursor),
        )
    params = filters.params()
    context: dict[str, Any] = {
        **_helpers(page),
        "values": raw,
        "error": error,
        "records": found.records,
        "own_only": own_only,
        "departments": [] if own_only else orgs.list_departments(page.session),
        "action_options": _action_options(raw["action"].strip() or None),
        "paged": bool(cursor),
        "first_url": audit_url("/audit", params),
        "more_url": audit_url("/audit", params, cursor=found.next_cursor) if found.next_cursor else None,
        "export_urls": {fmt: audit_url("/api/v1/audit/export", params, format=fmt) for fmt in ("csv", "xlsx")},
    }
    htmx = request.headers.get("hx-request") == "true" and not request.headers.get("hx-history-restore-request")
    if htmx and cursor and error is None:  # "更多": the next rows, appended in place
        return page.render("audit/_rows.html", **context)
    if htmx:
        return page.render("audit/_results.html", **context)
    return page.render("audit/search.html", **context)


@router.get("/audit/{seq:int}")
def record_page(seq: int, page: Page = PageDep) -> Response:
    _require_reader(page)
    record = query.get_record(page.session, page.principal, seq)
    log_access(
        page.settings,
        page.principal,
        "audit.read",
        resource=f"audit:{seq}",
        subject_department=record.subject_department,
    )
    return page.render("audit/record.html", record=record, **_helpers(page))
