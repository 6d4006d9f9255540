"""Catalog pages: search, entry detail with history, the 编目 form, the review queue."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.datastructures import FormData

from datatong.audit.writer import log_access
from datatong.catalog import finder, service, vocab
from datatong.catalog.models import CatalogEntry
from datatong.catalog.schemas import EntryCreate, EntryIn, EntryUpdate
from datatong.errors import AppError, Forbidden
from datatong.orgs import service as orgs
from datatong.web.pages import (
    CheckedForm,
    Page,
    PageDep,
    PageRoute,
    error_map,
    form_text,
    local_time,
    require_login,
    safe_next,
)

router: APIRouter = APIRouter(route_class=PageRoute, include_in_schema=False)

FILTERS = ("provider", "class", "share_type", "update_cycle", "format", "open")
SORT_LABELS = {"relevance": "相关度", "modified": "最近更新", "name": "名称", "code": "代码"}
PAGE_SIZE = 20


# ---------------------------------------------------------------- search


def _search_params(query: Any) -> tuple[str, dict[str, str], str, finder.SearchParams]:
    q = query.get("q", "").strip()[:200]
    filters = {k: query.get(k, "").strip()[:32] for k in FILTERS if query.get(k, "").strip()}
    sort = query.get("sort", "relevance")
    sort = sort if sort in SORT_LABELS else "relevance"
    params = finder.SearchParams(
        q=q,
        provider=filters.get("provider"),
        class_code=filters.get("class"),
        share_type=filters.get("share_type"),
        update_cycle=filters.get("update_cycle"),
        format=filters.get("format"),
        sort=sort,
        open={"true": True, "false": False}.get(filters.get("open", "")),
        limit=PAGE_SIZE,
        cursor=query.get("cursor") or None,
    )
    return q, filters, sort, params


def search_url(q: str, filters: dict[str, str], sort: str = "relevance", **changes: str | None) -> str:
    """The search page URL with some parameters changed (None removes one); always page 1."""
    state: dict[str, str | None] = {
        "q": q,
        **filters,
        "sort": None if sort == "relevance" else sort,
    }
    state.update(changes)
    pairs = [(k, v) for k, v in state.items() if v]
    return "/catalog" + ("?" + urlencode(pairs) if pairs else "")


def _facet_view(result: finder.SearchResult, q: str, filters: dict[str, str], sort: str) -> list[dict[str, Any]]:
    facets = []
    for name, title in vocab.FACETS.items():
        values = []
        for value, label, count in result.facets.get(name, []):
            selected = filters.get(name) == value
            url = search_url(q, filters, sort, **{name: None if selected else value})
            values.append({"label": label, "count": count, "url": url, "selected": selected})
        facets.append({"name": name, "title": title, "values": values})
    return facets


def _chips(facets: list[dict[str, Any]], q: str, filters: dict[str, str], sort: str) -> list[dict[str, str]]:
    """The filters in force, each with a link that removes it."""
    chips = []
    for name, value in filters.items():
        remove = search_url(q, filters, sort, **{name: None})
        label = next(
            (v["label"] for f in facets if f["name"] == name for v in f["values"] if v["selected"]),
            value,
        )
        chips.append({"title": vocab.FACETS[name], "label": label, "url": remove})
    return chips


@router.get("/catalog")
def search_page(request: Request, page: Page = PageDep) -> Response:
    q, filters, sort, params = _search_params(request.query_params)
    anonymous = page.settings.anonymous_catalog
    error = None
    try:
        result = finder.search(page.session, page.principal, params, anonymous)
    except AppError as exc:  # a stale cursor or the like: say so and show page 1
        page.rollback()
        error = exc.message
        params.cursor = None
        result = finder.search(page.session, page.principal, params, anonymous)
    facets = _facet_view(result, q, filters, sort)
    context: dict[str, Any] = {
        "q": q,
        "filters": filters,
        "sort": sort,
        "sort_labels": SORT_LABELS,
        "result": result,
        "facets": facets,
        "chips": _chips(facets, q, filters, sort),
        "error": error,
        "paged": bool(params.cursor),
        "first_url": search_url(q, filters, sort),
        "clear_url": search_url(q, {}, sort),
        "sort_urls": {s: search_url(q, filters, s) for s in SORT_LABELS},
        "next_url": search_url(q, filters, sort, cursor=result.next_cursor) if result.next_cursor else None,
    }
    htmx = request.headers.get("hx-request") == "true"
    if htmx and not request.headers.get("hx-history-restore-request"):
        return page.render("catalog/_search_body.html", **context)
    return page.render("catalog/search.html", **context)


# ---------------------------------------------------------------- entry detail

SECTIONS: list[tuple[str, list[str]]] = [
    (
        "基本信息",
        [
            "name",
            "code",
            "class_code",
            "provider",
            "provider_code",
            "provider_unit",
            "keywords",
            "summary",
        ],
    ),
    ("格式", ["format_category", "format_type"]),
    (
        "共享属性",
        ["share_type", "share_method", "share_subtype", "share_condition", "no_share_basis"],
    ),
    ("开放属性", ["is_open", "open_condition"]),
    (
        "更新与发布",
        [
            "update_cycle",
            "release_date",
            "related_codes",
            "source_system",
            "online_url",
            "service_info",
        ],
    ),
    (
        "元数据",
        [
            "metadata_maintainer",
            "metadata_updated_at",
            "status",
            "version",
            "created_at",
            "modified_at",
        ],
    ),
]
EXTRA_LABELS = {
    "code": "信息资源代码",
    "provider": "提供方",
    "metadata_updated_at": "元数据更新日期",
    "status": "状态",
    "version": "版本",
    "created_at": "创建时间",
    "modified_at": "最近修改",
}
# Which code list turns a stored value into its Chinese label, by field name.
VALUE_LABELS: dict[str, dict[str, str]] = {
    "share_type": vocab.SHARE_TYPES,
    "share_method": vocab.SHARE_METHODS,
    "share_subtype": vocab.SHARE_SUBTYPES,
    "format_category": vocab.FORMAT_CATEGORIES,
    "update_cycle": vocab.UPDATE_CYCLES,
    "status": vocab.STATUSES,
    "data_type": vocab.DATA_TYPES,
    "sensitivity": vocab.SENSITIVITIES,
}


def show_value(name: str, value: Any) -> str:
    """A stored value as an officer reads it: labels for codes, 是/否 for flags."""
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, dict):  # an item added or removed: its name says which
        return str(value.get("name", ""))
    return vocab.label(VALUE_LABELS.get(name, {}), str(value))


def _field_value(entry: CatalogEntry, name: str) -> str:
    if name == "class_code":
        cls = entry.catalog_class
        return f"{cls.code} {cls.name}（{vocab.CATALOG_TYPES.get(entry.catalog_type, '')}）"
    if name == "provider":
        return entry.provider.name
    if name == "version":
        return f"第 {entry.version} 版"
    if name in ("created_at", "modified_at"):
        return local_time(getattr(entry, name))
    value = getattr(entry, name)
    return value.isoformat() if hasattr(value, "isoformat") else show_value(name, value)


WIDE_FIELDS = ("summary", "share_condition", "no_share_basis", "open_condition", "service_info")
BASIS_HIDDEN = "（仅提供方和平台管理员可见）"


def entry_sections(entry: CatalogEntry, show_basis: bool = True) -> list[dict[str, Any]]:
    """The entry's fields grouped as in the 编制指南; ``show_basis`` per may_see_no_share_basis."""
    sections = []
    for title, names in SECTIONS:
        rows = []
        for name in names:
            label = EXTRA_LABELS.get(name) or service.FIELD_LABELS[name]
            value = _field_value(entry, name)
            if name == "no_share_basis" and value and not show_basis:
                value = BASIS_HIDDEN
            link = name == "online_url" and value.startswith(("http://", "https://"))
            rows.append(
                {
                    "name": name,
                    "label": label,
                    "value": value,
                    "href": value if link else None,
                    "wide": name in WIDE_FIELDS,
                }
            )
        sections.append({"title": title, "rows": rows})
    return sections


def change_rows(changes: list[dict[str, Any]], show_basis: bool = True) -> list[dict[str, str]]:
    """A version's diff for display; items added or removed show as the item's name."""
    rows = []
    for change in changes:
        key = str(change.get("field", "")).rsplit(".", 1)[-1]
        if change.get("field") == "no_share_basis" and not show_basis:
            rows.append({"label": str(change.get("label", "")), "kind": "hidden", "old": "", "new": ""})
            continue
        old, new = change.get("old"), change.get("new")
        kind = (
            "added"
            if old is None and isinstance(new, dict)
            else "removed"
            if new is None and isinstance(old, dict)
            else "changed"
        )
        rows.append(
            {
                "label": str(change.get("label", "")),
                "kind": kind,
                "old": show_value(key, old),
                "new": show_value(key, new),
            }
        )
    return rows


def _actions(page: Page, entry: CatalogEntry) -> dict[str, bool]:
    p = page.principal
    editor = p.is_authenticated and service.can_edit(p, entry)
    return {
        "edit": editor and entry.status in service.EDITABLE_STATUSES,
        "submit": editor and entry.status in service.TRANSITIONS["submit"][0],
        "revoke": editor and entry.status in service.TRANSITIONS["request_revoke"][0],
        "review": p.is_platform_admin and entry.status in ("pending_publish", "pending_revoke"),
    }


def render_entry(
    page: Page,
    entry: CatalogEntry,
    status_code: int = 200,
    action_errors: dict[str, str] | None = None,
) -> Response:
    # History names the officers who changed an entry: shown to signed-in users only.
    versions = service.list_versions(page.session, page.principal, entry.id) if page.principal.is_authenticated else []
    show_basis = service.may_see_no_share_basis(page.principal, entry)
    history = [
        {
            "v": v,
            "action": service.ACTION_LABELS.get(v.action, v.action),
            "changes": change_rows(v.changes or [], show_basis),
        }
        for v in versions
    ]
    return page.render(
        "catalog/entry.html",
        status_code=status_code,
        entry=entry,
        sections=entry_sections(entry, show_basis),
        history=history,
        actions=_actions(page, entry),
        action_errors=action_errors or {},
        items=entry.items,
    )


@router.get("/catalog/{entry_id:int}")
def entry_page(entry_id: int, page: Page = PageDep) -> Response:
    entry = service.get_entry(page.session, page.principal, entry_id, page.settings.anonymous_catalog)
    log_access(
        page.settings, page.principal, "catalog.entry.read", resource=entry.code, subject_department=entry.provider_code
    )
    return render_entry(page, entry)


def _act(page: Page, entry_id: int, action: str, run: Any, back: str | None = None) -> Response:
    """Run one life-cycle step; a refused step is shown next to its button."""
    try:
        entry = run()
    except AppError as exc:
        if exc.status_code in (401, 403, 404):
            raise
        page.rollback()
        entry = service.get_entry(page.session, page.principal, entry_id)
        return render_entry(page, entry, exc.status_code, {action: exc.message})
    done = service.ACTION_LABELS.get(action, "审核")
    page.flash(f"已完成：{done}（当前状态：{vocab.STATUSES[entry.status]}）")
    return page.redirect(safe_next(back, f"/catalog/{entry_id}"))


@router.post("/catalog/{entry_id:int}/submit")
def submit_entry(entry_id: int, form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    require_login(page)
    reason = form_text(form, "reason") or None
    return _act(
        page,
        entry_id,
        "submit",
        lambda: service.transition(page.session, page.principal, entry_id, "submit", reason),
    )


@router.post("/catalog/{entry_id:int}/revoke")
def revoke_entry(entry_id: int, form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    require_login(page)
    reason = form_text(form, "reason")
    return _act(
        page,
        entry_id,
        "request_revoke",
        lambda: service.transition(page.session, page.principal, entry_id, "request_revoke", reason),
    )


@router.post("/catalog/{entry_id:int}/review")
def review_entry(entry_id: int, form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    require_login(page)
    decision, reason = form_text(form, "decision"), form_text(form, "reason") or None
    return _act(
        page,
        entry_id,
        "review",
        lambda: service.review(page.session, page.principal, entry_id, decision, reason),
        form_text(form, "back"),
    )


# ---------------------------------------------------------------- the 编目 form

FORM_FIELDS = [*service.ENTRY_FIELDS, "code", "reason"]
# The order fields appear in on the form, so the error summary reads top to bottom.
FORM_ORDER = [
    "name", "class_code", "provider_code", "code", "provider_unit", "summary", "keywords",
    "format_category", "format_type", "share_type", "share_method", "share_subtype",
    "share_condition", "no_share_basis", "is_open", "open_condition", "update_cycle",
    "release_date", "related_codes", "source_system", "online_url", "service_info",
    "metadata_maintainer", "items", "reason",
]  # fmt: skip


def _form_position(name: str) -> tuple[int, int]:
    base, _, rest = name.partition("[")
    row = int(rest.split("]")[0]) if rest[:1].isdigit() else -1
    return (FORM_ORDER.index(base) if base in FORM_ORDER else len(FORM_ORDER), row)


ITEM_COLUMNS = (
    "name",
    "code",
    "data_type",
    "length",
    "sensitivity",
    "is_authoritative",
    "description",
)
# Required text fields go to the service as "" so its rules answer in Chinese.
REQUIRED_TEXT = {"name", "class_code", "summary", "format_category", "share_type", "update_cycle"}
MIN_ROWS = 5


def blank_row() -> dict[str, str]:
    return {
        "name": "",
        "code": "",
        "data_type": "",
        "length": "",
        "sensitivity": "internal",
        "is_authoritative": "0",
        "description": "",
    }


def _is_blank(row: dict[str, str]) -> bool:
    return not any(row.get(c) for c in ("name", "code", "data_type", "length", "description"))


PYDANTIC_MESSAGES = {
    "int_parsing": "请填写整数",
    "int_from_float": "请填写整数",
    "greater_than_equal": "不能小于 {ge}",
    "less_than_equal": "不能大于 {le}",
    "string_too_long": "不能超过 {max_length} 个字符",
    "too_long": "不能超过 {max_length} 项",
    "date_parsing": "日期格式应为 年-月-日，如 2025-01-31",
    "date_from_datetime_parsing": "日期格式应为 年-月-日，如 2025-01-31",
    "date_from_datetime_inexact": "日期格式应为 年-月-日，如 2025-01-31",
}


def pydantic_errors(exc: ValidationError) -> dict[str, list[str]]:
    """Type errors of the form, keyed like the service's fields ("items[2].length")."""
    errors: dict[str, list[str]] = {}
    for e in exc.errors():
        loc = list(e.get("loc", ()))
        name = str(loc[0]) if loc else ""
        if name == "items" and len(loc) >= 3:
            name = f"items[{loc[1]}].{loc[2]}"
        template = PYDANTIC_MESSAGES.get(e.get("type", ""), "格式不正确")
        errors.setdefault(name, []).append(template.format(**e.get("ctx", {})))
    return errors


@dataclass
class EntryForm:
    """The 编目 form as typed: kept as text so it can be shown again exactly."""

    values: dict[str, str]
    rows: list[dict[str, str]] = field(default_factory=list)
    layout_only: bool = False  # "增加信息项" / "删除" without JS: redraw, do not save

    @classmethod
    def read(cls, form: FormData) -> EntryForm:
        values = {name: form_text(form, name) for name in FORM_FIELDS}
        values["is_open"] = "1" if form.get("is_open") else ""
        columns = {c: [str(v).strip() for v in form.getlist(f"item_{c}")] for c in ITEM_COLUMNS}
        count = max((len(col) for col in columns.values()), default=0)
        rows = [{c: col[i] if i < len(col) else "" for c, col in columns.items()} for i in range(count)]
        me = cls(values, rows)
        remove = form_text(form, "remove_item")
        if remove.isdigit():
            if int(remove) < len(rows):
                rows.pop(int(remove))
            me.layout_only = True
        elif form_text(form, "action") == "add_item":
            rows.extend(blank_row() for _ in range(3))
            me.layout_only = True
        return me

    def filled(self) -> list[dict[str, str]]:
        return [r for r in self.rows if not _is_blank(r)]

    def compact(self) -> EntryForm:
        """Filled rows first, so row i on screen is items[i] in the service's messages."""
        return EntryForm(self.values, self.filled())

    def display_rows(self) -> list[dict[str, str]]:
        rows = list(self.rows)
        while len(rows) < MIN_ROWS or not any(_is_blank(r) for r in rows):
            rows.append(blank_row())
        return rows

    def to_model(self, model: type[EntryIn]) -> tuple[EntryIn | None, dict[str, list[str]]]:
        raw: dict[str, Any] = {}
        for name in FORM_FIELDS:
            value = self.values.get(name, "")
            raw[name] = value if (value or name in REQUIRED_TEXT) else None
        raw["is_open"] = bool(self.values.get("is_open"))
        if model is EntryUpdate:
            # Required: left empty, the service says so in Chinese.
            raw["reason"] = self.values.get("reason", "")
        raw["items"] = [_item_raw(r) for r in self.filled()]
        try:
            return model.model_validate(raw), {}
        except ValidationError as exc:
            return None, pydantic_errors(exc)


def _item_raw(row: dict[str, str]) -> dict[str, Any]:
    return {
        "name": row["name"],
        "code": row["code"] or None,
        "data_type": row["data_type"],
        "length": row["length"] or None,
        "description": row["description"] or None,
        "sensitivity": row["sensitivity"] or "internal",
        "is_authoritative": row["is_authoritative"] == "1",
    }


def entry_form_values(entry: CatalogEntry) -> EntryForm:
    values = {name: "" if getattr(entry, name) is None else str(getattr(entry, name)) for name in service.ENTRY_FIELDS}
    values.update(
        is_open="1" if entry.is_open else "",
        code=entry.code,
        reason="",
        release_date=entry.release_date.isoformat() if entry.release_date else "",
    )
    rows = [
        {
            "name": i.name,
            "code": i.code or "",
            "data_type": i.data_type,
            "length": "" if i.length is None else str(i.length),
            "sensitivity": i.sensitivity,
            "is_authoritative": "1" if i.is_authoritative else "0",
            "description": i.description or "",
        }
        for i in entry.items
    ]
    return EntryForm(values, rows)


def _class_groups(page: Page) -> list[dict[str, Any]]:
    """Classes for the select: 类 as groups, 项 and finer as options (only those may be chosen)."""
    groups: list[dict[str, Any]] = []
    for cls in service.list_classes(page.session):
        if cls.level == 1:
            groups.append({"label": f"{cls.code} {cls.name}", "options": []})
        elif groups:
            indent = "\u3000" * (cls.level - 2)
            label = f"{indent}{cls.code} {cls.name}"
            groups[-1]["options"].append({"value": cls.code, "label": label})
    return groups


def render_form(
    page: Page,
    entry: CatalogEntry | None,
    form: EntryForm,
    errors: dict[str, list[str]] | None = None,
    status_code: int = 200,
) -> Response:
    errors = dict(errors or {})
    # The service checks the class after the other rules: name a missing one with the rest.
    if errors and not form.values.get("class_code"):
        errors["class_code"] = ["请选择信息资源分类"]
    departments = orgs.list_departments(page.session) if page.principal.is_platform_admin else []
    return page.render(
        "catalog/form.html",
        status_code=status_code,
        entry=entry,
        values=form.values,
        rows=form.display_rows(),
        errors=errors,
        class_groups=_class_groups(page),
        departments=departments,
        field_labels=service.FIELD_LABELS,
        error_list=[(n, msg) for n in sorted(errors, key=_form_position) for msg in errors[n]],
    )


def _save(page: Page, entry: CatalogEntry | None, form: EntryForm) -> Response:
    """Validate and store; any refusal redraws the form with the messages by their fields."""
    if form.layout_only:
        return render_form(page, entry, form)
    form = form.compact()
    data, errors = form.to_model(EntryUpdate if entry else EntryCreate)
    if data is None:
        return render_form(page, entry, form, errors, 422)
    try:
        if entry is None:
            assert isinstance(data, EntryCreate)
            saved = service.create_entry(page.session, page.principal, data, data.reason)
        else:
            assert isinstance(data, EntryUpdate)
            saved = service.update_entry(page.session, page.principal, entry.id, data, data.reason)
    except AppError as exc:
        if exc.status_code in (401, 403, 404):
            raise
        page.rollback()  # also reloads ``entry`` as stored, undoing what the service applied
        return render_form(page, entry, form, error_map(exc), exc.status_code)
    page.flash(f"已保存：{saved.name}（第 {saved.version} 版）")
    return page.redirect(f"/catalog/{saved.id}")


@router.get("/catalog/new")
def new_entry_form(page: Page = PageDep) -> Response:
    service.require_editor(page.principal)
    values = {name: "" for name in FORM_FIELDS}
    values["share_method"] = "platform"  # 共享平台 is the default method (SPEC §1)
    return render_form(page, None, EntryForm(values))


@router.post("/catalog/new")
def create_entry(form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    service.require_editor(page.principal)
    return _save(page, None, EntryForm.read(form))


def _editable(page: Page, entry_id: int) -> CatalogEntry:
    require_login(page)
    entry = service.get_entry(page.session, page.principal, entry_id)
    if not service.can_edit(page.principal, entry):
        raise Forbidden("只能修改本部门的信息资源", "You may edit only your own department's entries")
    if entry.status not in service.EDITABLE_STATUSES:
        raise AppError(
            "catalog.not_editable",
            f"“{vocab.STATUSES[entry.status]}”状态的信息资源不能修改",
            f"An entry in state {entry.status} cannot be edited",
            status_code=409,
        )
    return entry


@router.get("/catalog/{entry_id:int}/edit")
def edit_entry_form(entry_id: int, page: Page = PageDep) -> Response:
    entry = _editable(page, entry_id)
    return render_form(page, entry, entry_form_values(entry))


@router.post("/catalog/{entry_id:int}/edit")
def edit_entry(entry_id: int, form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    entry = _editable(page, entry_id)
    return _save(page, entry, EntryForm.read(form))


# ---------------------------------------------------------------- review queue


@router.get("/review")
def review_queue(page: Page = PageDep) -> Response:
    orgs.require_platform_admin(page.principal)
    queues = []
    for status, title in (("pending_publish", "发布审核"), ("pending_revoke", "撤销审核")):
        params = finder.SearchParams(status=status, sort="modified", limit=200, facets=False)
        result = finder.search(page.session, page.principal, params)
        queues.append(
            {
                "status": status,
                "title": title,
                "result": result,
                "reasons": service.latest_reasons(page.session, [e.id for e in result.entries]),
            }
        )
    return page.render("review.html", queues=queues)
