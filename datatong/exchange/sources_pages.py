"""Pages of data sources (数据交换 › 数据源): the list, one source (details, field mapping,
「测试连接」 by htmx, file upload, enable/disable, delete), and the form that connects a
published catalog entry (new) or changes its connection (edit).

Thin like every page: the rules are ``datatong.exchange.sources``'s (the same functions
the API calls); a refused step comes back as an ``AppError`` whose Chinese message is
shown by the form that asked (refusals of access — login, 403, 404 — as pages).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.orm import object_session
from starlette.datastructures import FormData, UploadFile

from datatong.catalog import service as catalog
from datatong.catalog.models import CatalogEntry
from datatong.errors import AppError, NotFound
from datatong.exchange import sources
from datatong.exchange.models import CHANGE_KINDS, SOURCE_KINDS, SOURCE_STATUSES, DataSource
from datatong.exchange.sources_api import source_out
from datatong.orgs import service as orgs
from datatong.orgs.models import Role
from datatong.sharing.service import DEPT_ROLES
from datatong.web.pages import (
    CheckedForm,
    Page,
    PageDep,
    PageRoute,
    error_map,
    form_text,
    place_errors,
    require_login,
    templates,
)

router: APIRouter = APIRouter(route_class=PageRoute, include_in_schema=False)

SOURCE_FIELDS = [
    "kind",
    "url",
    "password",
    "table_name",
    "key_item",
    "fields",
    "change_column",
    "change_kind",
    "options",
]
# What the API's SourceIn allows (the URL as stored: DataSource.url holds 500).
LIMITS = {"url": 500, "password": 500, "table_name": 200, "change_column": 200, "options": 20000}


def source_of_entry(entry: CatalogEntry) -> int | None:
    """The id of an entry's data source, for the catalog entry page's link (a read in the
    session the entry was loaded in)."""
    session = object_session(entry)
    if session is None:
        return None
    source = sources.source_for_entry(session, entry.id)
    return source.id if source else None


templates.env.globals.update(exchange_source_of=source_of_entry, SOURCE_STATUSES=SOURCE_STATUSES)


class FormInvalid(AppError):
    """A form value the page refuses before calling the service (shown on the form)."""

    status_code = 422

    def __init__(self, field: str, message: str) -> None:
        super().__init__("form_invalid", message, "The form holds an invalid value", field=field)


def require_exchange_user(page: Page) -> None:
    """The platform admin or a department's officers (those the nav shows 数据交换 to)."""
    require_login(page)
    orgs.require_role(page.principal, Role.PLATFORM_ADMIN, *DEPT_ROLES)


def shown(exc: AppError) -> bool:
    """Errors shown by the form that asked (the others as their own page)."""
    return exc.status_code not in (401, 403, 404)


def _is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true" and not request.headers.get("hx-history-restore-request")


# ---------------------------------------------------------------- list


@router.get("/exchange/sources")
def sources_page(page: Page = PageDep) -> Response:
    require_exchange_user(page)
    found = sources.list_sources(page.session, page.principal)
    return page.render("exchange/sources.html", rows=[source_out(s) for s in found])


# ---------------------------------------------------------------- one source


def render_source(
    page: Page,
    source_id: int,
    status_code: int = 200,
    action_errors: dict[str, str] | None = None,
    upload_errors: list[dict[str, Any]] | None = None,
    test_result: sources.TestResult | None = None,
) -> Response:
    source = sources.get_source(page.session, page.principal, source_id)
    return page.render(
        "exchange/source.html",
        status_code=status_code,
        source=source,
        o=source_out(source),
        entry=source.entry,
        can_edit=catalog.can_edit(page.principal, source.entry),
        change_kinds=CHANGE_KINDS,
        action_errors=action_errors or {},
        upload_errors=upload_errors or [],
        result=test_result,
    )


@router.get("/exchange/sources/{source_id:int}")
def source_page(source_id: int, page: Page = PageDep) -> Response:
    require_exchange_user(page)
    return render_source(page, source_id)


@router.post("/exchange/sources/{source_id:int}/test")
def test_post(source_id: int, request: Request, form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    require_exchange_user(page)
    result = sources.test_source(page.session, page.settings, page.principal, source_id)
    if _is_htmx(request):
        source = sources.get_source(page.session, page.principal, source_id)
        return page.render("exchange/_test_result.html", result=result, o=source_out(source), oob=True)
    return render_source(page, source_id, test_result=result)


@router.post("/exchange/sources/{source_id:int}/file")
def upload_post(source_id: int, form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    require_exchange_user(page)
    upload = form.get("file")
    try:
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise FormInvalid("file", "请选择要上传的 CSV 或 Excel（.xlsx）文件")
        source = sources.load_file(page.session, page.settings, page.principal, source_id, upload.filename, upload.file)
    except AppError as exc:
        if not shown(exc):
            raise
        page.rollback()  # nothing of a refused file stays
        details = [d for d in exc.details if isinstance(d, dict) and "row" in d]
        return render_source(page, source_id, exc.status_code, {"file": exc.message}, details)
    page.flash(f"已载入 {source.rows} 行数据")
    return page.redirect(f"/exchange/sources/{source_id}")


@router.post("/exchange/sources/{source_id:int}/enabled")
def enabled_post(source_id: int, form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    require_exchange_user(page)
    enable = form_text(form, "enabled") == "1"
    try:
        sources.update_source(page.session, page.settings, page.principal, source_id, enabled=enable)
    except AppError as exc:
        if not shown(exc):
            raise
        page.rollback()
        return render_source(page, source_id, exc.status_code, {"enabled": exc.message})
    page.flash("数据源已启用" if enable else "数据源已停用")
    return page.redirect(f"/exchange/sources/{source_id}")


@router.post("/exchange/sources/{source_id:int}/delete")
def delete_post(source_id: int, form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    require_exchange_user(page)
    if form_text(form, "confirm") != "1":
        return render_source(page, source_id, 422, {"delete": "请勾选确认后再删除"})
    try:
        sources.delete_source(page.session, page.principal, source_id)
    except AppError as exc:
        if not shown(exc):
            raise
        page.rollback()
        return render_source(page, source_id, exc.status_code, {"delete": exc.message})
    page.flash("数据源已删除")
    return page.redirect("/exchange/sources")


# ---------------------------------------------------------------- new and edit


def _entry_to_configure(page: Page, raw_id: str) -> CatalogEntry:
    """The entry the new-source form is for (the service's own check, before the form)."""
    require_exchange_user(page)
    if not raw_id.isdigit() or len(raw_id) > 18:
        raise NotFound("信息资源", "Catalog entry")
    return sources.entry_to_configure(page.session, page.principal, int(raw_id))


def render_form(
    page: Page,
    entry: CatalogEntry,
    kind: str,
    values: dict[str, Any],
    errors: dict[str, list[str]] | None = None,
    status_code: int = 200,
    source: DataSource | None = None,
) -> Response:
    errors = place_errors(errors or {}, set(SOURCE_FIELDS))
    error_list = [(n, m) for n in ["", *SOURCE_FIELDS] for m in errors.get(n, [])]
    values.pop("password", None)  # never shown again
    return page.render(
        "exchange/source_form.html",
        status_code=status_code,
        entry=entry,
        kind=kind,
        kinds=SOURCE_KINDS,
        change_kinds=CHANGE_KINDS,
        values=values,
        errors=errors,
        error_list=error_list,
        source=source,
    )


def _read_form(form: FormData, entry: CatalogEntry, kind: str) -> dict[str, Any]:
    """The form as typed: text fields and the item → column mapping (blank: not served)."""
    values: dict[str, Any] = {name: form_text(form, name) for name in SOURCE_FIELDS if name != "fields"}
    values["password"] = form.get("password") if isinstance(form.get("password"), str) else ""
    values["kind"] = kind
    values["fields"] = {
        item.name: form_text(form, f"col-{i}") for i, item in enumerate(entry.items) if form_text(form, f"col-{i}")
    }
    return values


def _check_lengths(values: dict[str, Any]) -> None:
    for name, limit in LIMITS.items():
        if len(values.get(name) or "") > limit:
            raise FormInvalid(name, f"不能超过 {limit} 个字符")
    if any(len(col) > 200 for col in values["fields"].values()):
        raise FormInvalid("fields", "列名或字段名不能超过 200 个字符")


def _terms(values: dict[str, Any], kind: str) -> dict[str, Any]:
    """The keyword arguments of ``create_source`` / ``update_source`` for ``kind``."""
    terms: dict[str, Any] = {
        "key_item": values["key_item"],
        "change_column": values["change_column"] or None,
        "change_kind": values["change_kind"] or None,
    }
    if kind == "file":
        return terms  # the managed table's columns are the platform's
    terms["fields"] = values["fields"]
    terms["url"] = values["url"]
    if kind == "sql":
        terms["table_name"] = values["table_name"]
    if kind == "http":
        terms["options"] = values["options"] or None
    return terms


@router.get("/exchange/sources/new")
def new_form(request: Request, page: Page = PageDep) -> Response:
    entry = _entry_to_configure(page, request.query_params.get("entry_id", ""))
    existing = sources.source_for_entry(page.session, entry.id)
    if existing is not None:
        return page.redirect(f"/exchange/sources/{existing.id}")
    kind = request.query_params.get("kind", "sql")
    kind = kind if kind in SOURCE_KINDS else "sql"
    key = next((i.name for i in entry.items if i.is_authoritative), entry.items[0].name if entry.items else "")
    return render_form(page, entry, kind, {"key_item": key, "fields": {}})


@router.post("/exchange/sources/new")
def new_post(form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    entry = _entry_to_configure(page, form_text(form, "entry_id"))
    kind = form_text(form, "kind")
    kind = kind if kind in SOURCE_KINDS else "sql"
    values = _read_form(form, entry, kind)
    try:
        _check_lengths(values)
        terms = _terms(values, kind)
        source = sources.create_source(
            page.session,
            page.settings,
            page.principal,
            entry.id,
            kind,
            password=values["password"] or None,
            **terms,
        )
    except AppError as exc:
        if not shown(exc):
            raise
        page.rollback()
        entry = catalog.get_entry(page.session, page.principal, entry.id)
        return render_form(page, entry, kind, values, error_map(exc), 409 if exc.status_code == 409 else 422)
    page.flash("数据源已保存，请测试连接" if kind != "file" else "数据源已保存，请上传数据文件")
    return page.redirect(f"/exchange/sources/{source.id}")


def _source_values(source: DataSource) -> dict[str, Any]:
    o = source_out(source)
    return {
        "url": o.url or "",
        "table_name": o.table_name or "",
        "key_item": o.key_item or "",
        "fields": {f.item: f.column for f in o.fields},
        "change_column": o.change_column or "",
        "change_kind": o.change_kind or "",
        "options": source.options or "",
    }


def _source_to_edit(page: Page, source_id: int) -> DataSource:
    require_exchange_user(page)
    return sources.source_to_edit(page.session, page.principal, source_id)


@router.get("/exchange/sources/{source_id:int}/edit")
def edit_form(source_id: int, page: Page = PageDep) -> Response:
    source = _source_to_edit(page, source_id)
    return render_form(page, source.entry, source.kind, _source_values(source), source=source)


@router.post("/exchange/sources/{source_id:int}/edit")
def edit_post(source_id: int, form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    source = _source_to_edit(page, source_id)
    kind = source.kind
    values = _read_form(form, source.entry, kind)
    try:
        _check_lengths(values)
        terms = _terms(values, kind)
        if kind == "file":
            terms["key_item"] = values["key_item"] or None
        if values["password"]:  # blank: keep the stored password
            terms["password"] = values["password"]
        if not values["url"]:  # blank: keep the stored URL
            terms.pop("url", None)
        sources.update_source(page.session, page.settings, page.principal, source_id, **terms)
    except AppError as exc:
        if not shown(exc):
            raise
        page.rollback()
        source = sources.get_source(page.session, page.principal, source_id)
        return render_form(page, source.entry, kind, values, error_map(exc), 422, source)
    page.flash("数据源已修改，请重新测试连接")
    return page.redirect(f"/exchange/sources/{source_id}")
