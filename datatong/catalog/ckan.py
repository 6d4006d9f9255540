"""A CKAN-compatible, read-only Action API (/api/3/action/…, also /api/action/…).

Existing open-data tools (the ``ckanapi`` client and CLI, CKAN harvesters, portal
aggregators) read the catalog through it without knowing Datatong. Every call goes
through the catalog service, so the visibility rules are the platform's own:
anonymous callers see what ``settings.anonymous_catalog`` allows, a signed-in caller
passes our token as ``Authorization`` (with or without ``Bearer``) or ``X-CKAN-API-Key``.

Mapping of a 信息资源 to a CKAN package: ``id`` = 信息资源代码, ``name`` = the code as a
lower-case URL slug, ``notes`` = 摘要, ``tags`` = 关键字, ``organization``/``owner_org``
= the provider department (``name`` = department code), ``groups`` = the
classification node, one resource (format = 格式类型 or the format category, url =
在线资源链接 or the entry's API), and the fields CKAN has no slot for as ``extras``
(labels under the field name, codes under ``<field>_code``) so harvesters keep them.

Supported ``fq``/``q`` clauses (joined by spaces or AND): ``organization:``/``owner_org:``
(department code), ``res_format:`` (format category, code or label), ``groups:``
(class-code prefix), ``share_type:``, ``update_cycle:`` (code or label), ``isopen:``,
``tags:`` (matched through the full-text index, which holds the keywords),
``metadata_modified:[<ISO time> TO *]``; ``dataset_type:dataset``, ``state:active``,
``capacity:public`` are accepted and match everything.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from datatong import __version__
from datatong.catalog import finder, service, vocab
from datatong.catalog.dcat import as_utc, base_url, entry_api_url, is_web_url, split_keywords
from datatong.catalog.models import CatalogEntry
from datatong.errors import AppError, NotFound
from datatong.orgs.models import Department
from datatong.orgs.service import Principal, principal_from_token
from datatong.web.deps import get_principal, get_session

router = APIRouter(tags=["互操作 interop"])

CKAN_VERSION = "2.10.0"
MAX_ROWS = 1000
# CKAN sort expressions -> the catalog service's sort keys.
SORTS = {
    "score desc": "relevance",
    "metadata_modified desc": "modified",
    "name asc": "code",
    "id asc": "code",
    "title_string asc": "name",
}
# CKAN facet fields -> the service's facets.
FACETS = {
    "organization": "provider",
    "res_format": "format",
    "groups": "class",
    "share_type": "share_type",
    "update_cycle": "update_cycle",
    "isopen": "open",
}
ACTIVE_STATUSES = ("published", "pending_revoke")


class CkanError(Exception):
    """An error in CKAN's shape: ``__type``, message, HTTP status, field errors."""

    def __init__(self, kind: str, message: str, status: int, fields: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.status, self.fields = kind, message, status, fields or {}

    def body(self) -> dict[str, Any]:
        return {"__type": self.kind, "message": self.message, **self.fields}


def validation_error(field_name: str, message: str) -> CkanError:
    return CkanError("Validation Error", message, 409, {field_name: [message]})


def from_app_error(exc: AppError) -> CkanError:
    """Our errors keep their meaning; only the envelope becomes CKAN's."""
    if exc.status_code == 404:
        return CkanError("Not Found Error", f"Not found: {exc.message}", 404)
    if exc.status_code in (401, 403):
        return CkanError("Authorization Error", f"Access denied: {exc.message}", 403)
    return validation_error(exc.field or "__all__", exc.message)


@dataclass
class Ctx:
    """What every action needs: the database, the caller and this node's URL."""

    session: Session
    principal: Principal
    anonymous: str
    base: str


@dataclass
class Parsed:
    """The action's parameters, or why they could not be read (dependencies must not
    raise: the app's error handler would answer in our shape, not CKAN's)."""

    data: dict[str, Any] = field(default_factory=dict)
    error: CkanError | None = None


# ---------------------------------------------------------------- parameters


async def action_data(request: Request) -> Parsed:
    """Query string, overridden by a JSON (ckanapi) or form-encoded POST body."""
    # A repeated GET parameter (ckanapi -g sends lists that way) stays a list.
    data: dict[str, Any] = {}
    for key in request.query_params:
        values = request.query_params.getlist(key)
        data[key] = values if len(values) > 1 else values[0]
    if request.method != "POST":
        return Parsed(data)
    raw = await request.body()
    if not raw.strip():
        return Parsed(data)
    try:
        if "application/x-www-form-urlencoded" in request.headers.get("content-type", ""):
            body: Any = dict(parse_qsl(raw.decode(), keep_blank_values=True))
        else:
            body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return Parsed(error=CkanError("Bad Request", f"Bad request - JSON Error: {exc}", 400))
    if not isinstance(body, dict):
        return Parsed(error=CkanError("Bad Request", "Bad request - JSON Error: not an object", 400))
    return Parsed({**data, **body})


def int_param(data: dict[str, Any], name: str, default: int, low: int = 0, high: int | None = None) -> int:
    value = data.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise validation_error(name, f"{name} 须为整数 (Invalid integer)") from None
    if number < low or (high is not None and number > high):
        limit = f"{low}–{high}" if high is not None else f"≥ {low}"
        raise validation_error(name, f"{name} 须在 {limit} 之间 (out of range)")
    return number


def bool_param(data: dict[str, Any], name: str) -> bool:
    value = data.get(name, False)
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def list_param(data: dict[str, Any], name: str) -> list[str]:
    """CKAN sends lists as JSON arrays, in a JSON body or as a JSON-encoded string."""
    value = data.get(name)
    if value in (None, ""):
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = [value]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise validation_error(name, f"{name} 须为字符串列表 (Not a list of strings)")
    return value


# ---------------------------------------------------------------- q / fq


CLAUSE = re.compile(r'(?<!\S)([+-]?)([A-Za-z_][\w.]*):(\[[^\]]*\]|"[^"]*"|\S+)')
RANGE = re.compile(r"^\[\s*(\S+)\s+TO\s+(\*|NOW)\s*\]$", re.IGNORECASE)
MATCH_ALL = {
    "dataset_type": "dataset",
    "type": "dataset",
    "state": "active",
    "capacity": "public",
    "site_id": None,
}
TEXT_FIELDS = ("text", "title", "notes", "tags")


@dataclass
class Query:
    """A CKAN query reduced to the catalog search: free text plus exact filters."""

    words: list[str] = field(default_factory=list)
    filters: dict[str, Any] = field(default_factory=dict)
    impossible: bool = False  # two clauses that no entry can satisfy together

    def require(self, key: str, value: Any) -> None:
        if value is None or (key in self.filters and self.filters[key] != value):
            self.impossible = True
        self.filters[key] = value


def parse_query(session: Session, q: str, fq: str) -> Query:
    query = Query()
    _parse(session, query, q, strict=False)
    _parse(session, query, fq, strict=True)
    return query


def _parse(session: Session, query: Query, text: str, *, strict: bool) -> None:
    """Take the field clauses out of ``text``; what is left is free text.

    In ``q`` an unknown ``field:value`` is just text (a URL, a time); in ``fq``
    it is an error, since silently ignoring a filter would return wrong data.
    """
    rest = text.replace("*:*", " ")
    for match in list(CLAUSE.finditer(rest)):
        sign, name, value = match.groups()
        known = name in FILTERS or name in MATCH_ALL or name in TEXT_FIELDS
        if not known and not strict:
            continue
        if not known:
            raise validation_error("fq", f"不支持的过滤字段 {name} (Unsupported fq field)")
        if sign == "-":
            raise validation_error("fq", "不支持否定条件 (Negated clauses are not supported)")
        _apply_clause(session, query, name, value.strip('"'))
        rest = rest.replace(match.group(0), " ", 1)
    words = [w for w in rest.split() if w not in ("AND", "&&", "+")]
    if strict and words:
        raise validation_error("fq", f"无法解析的过滤条件 {' '.join(words)} (Unsupported fq syntax)")
    query.words.extend(words)


def _apply_clause(session: Session, query: Query, name: str, value: str) -> None:
    if name in TEXT_FIELDS:
        query.words.append(value)  # keywords are in the full-text index
    elif name in MATCH_ALL:
        if MATCH_ALL[name] not in (None, value):
            query.impossible = True
    else:
        FILTERS[name](session, query, value)


def _organization(session: Session, query: Query, value: str) -> None:
    code = session.scalar(select(Department.code).where(func.lower(Department.code) == value.lower()))
    query.require("provider", code)


def _coded(table: dict[str, str], key: str) -> Callable[[Session, Query, str], None]:
    def apply(_session: Session, query: Query, value: str) -> None:
        code = vocab.from_label(table, value) or vocab.from_label(table, value.lower())
        query.require(key, code)

    return apply


def _groups(_session: Session, query: Query, value: str) -> None:
    query.require("class_code", value)


def _isopen(_session: Session, query: Query, value: str) -> None:
    query.require("open", value.lower() in ("true", "1"))


def _modified(_session: Session, query: Query, value: str) -> None:
    match = RANGE.match(value)
    try:
        since = as_utc(datetime.fromisoformat(match.group(1))) if match else None
    except ValueError:
        since = None
    if since is None:
        raise validation_error("fq", "metadata_modified 仅支持 [ISO时间 TO *] (Use [<ISO time> TO *])")
    # Two lower bounds together mean the later one.
    query.filters["modified_since"] = max(since, query.filters.get("modified_since", since))


FILTERS: dict[str, Callable[[Session, Query, str], None]] = {
    "organization": _organization,
    "owner_org": _organization,
    "res_format": _coded(vocab.FORMAT_CATEGORIES, "format"),
    "share_type": _coded(vocab.SHARE_TYPES, "share_type"),
    "update_cycle": _coded(vocab.UPDATE_CYCLES, "update_cycle"),
    "groups": _groups,
    "isopen": _isopen,
    "metadata_modified": _modified,
}


def sort_param(value: Any) -> str:
    """CKAN's default is "score desc, metadata_modified desc"; the first key decides,
    the service breaks ties by id, so pages never overlap."""
    first = " ".join(str(value or "score desc").split(",")[0].lower().split())
    if first not in SORTS:
        raise validation_error("sort", "sort 须为 " + " / ".join(SORTS) + " (Unsupported sort)")
    return SORTS[first]


# ---------------------------------------------------------------- dict shapes


def slug(code: str) -> str:
    """A CKAN ``name``: lower case, only a-z 0-9 - _."""
    return re.sub(r"[^a-z0-9_-]+", "-", code.lower()).strip("-") or "x"


def timestamp(value: datetime | None) -> str | None:
    """CKAN writes naive UTC ISO timestamps."""
    return as_utc(value).replace(tzinfo=None).isoformat() if value else None


def organization_dict(dept: Department, package_count: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": dept.code,
        "name": dept.code,
        "title": dept.name,
        "display_name": dept.name,
        "description": dept.short_name or "",
        "type": "organization",
        "is_organization": True,
        "state": "active",
        "approval_status": "approved",
        "image_url": "",
        "image_display_url": "",
        "created": timestamp(dept.created_at),
        "extras": [
            {"key": "level", "value": dept.level},
            {"key": "parent_code", "value": dept.parent.code if dept.parent else ""},
        ],
    }
    if package_count is not None:
        out["package_count"] = package_count
    return out


def resource_dict(ctx: Ctx, entry: CatalogEntry) -> dict[str, Any]:
    category = vocab.label(vocab.FORMAT_CATEGORIES, entry.format_category)
    fmt = entry.format_type or category
    url = entry.online_url if is_web_url(entry.online_url) else entry_api_url(ctx.base, entry)
    return {
        "id": f"{slug(entry.code)}-data",
        "package_id": entry.code,
        "position": 0,
        "name": f"{entry.name}（{fmt}）",
        "description": entry.service_info or "",
        "url": url,
        "format": fmt,
        "format_category": category,
        "mimetype": None,
        "state": "active",
        "url_type": None,
        "resource_type": "api" if entry.format_category == "service" else None,
        "created": timestamp(entry.created_at),
        "last_modified": timestamp(entry.modified_at),
    }


# Coded fields: extras key -> (attribute, code list); the label goes under the key,
# the code under "<key>_code".
CODED_EXTRAS = {
    "catalog_type": ("catalog_type", vocab.CATALOG_TYPES),
    "format_category": ("format_category", vocab.FORMAT_CATEGORIES),
    "share_type": ("share_type", vocab.SHARE_TYPES),
    "share_method": ("share_method", vocab.SHARE_METHODS),
    "share_subtype": ("share_subtype", vocab.SHARE_SUBTYPES),
    "update_cycle": ("update_cycle", vocab.UPDATE_CYCLES),
    "status": ("status", vocab.STATUSES),
}
PLAIN_EXTRAS = (
    "code",
    "class_code",
    "provider_code",
    "provider_unit",
    "format_type",
    "share_condition",
    "open_condition",
    "release_date",
    "related_codes",
    "source_system",
    "online_url",
    "service_info",
    "metadata_maintainer",
    "metadata_updated_at",
)


def extras(ctx: Ctx, entry: CatalogEntry) -> list[dict[str, str]]:
    pairs: dict[str, Any] = {
        "class_name": entry.catalog_class.name,
        "provider_name": entry.provider.name,
        "is_open": "true" if entry.is_open else "false",
    }
    for key, (attr, table) in CODED_EXTRAS.items():
        pairs[key] = vocab.label(table, getattr(entry, attr))
        pairs[f"{key}_code"] = getattr(entry, attr)
    pairs.update({name: getattr(entry, name) for name in PLAIN_EXTRAS})
    # Why data is not shared is for the platform operator only (SPEC §3).
    if ctx.principal.is_platform_admin:
        pairs["no_share_basis"] = entry.no_share_basis
    pairs["data_items"] = json.dumps([_item(i) for i in entry.items], ensure_ascii=False)
    pairs["dcat_jsonld"] = f"{entry_api_url(ctx.base, entry)}/dcat.jsonld"
    return [{"key": k, "value": str(v)} for k, v in pairs.items() if v not in (None, "")]


def _item(item: Any) -> dict[str, Any]:
    return {
        "name": item.name,
        "code": item.code,
        "data_type": item.data_type,
        "data_type_label": vocab.DATA_TYPES.get(item.data_type, ""),
        "length": item.length,
        "description": item.description,
        "sensitivity": item.sensitivity,
        "is_authoritative": item.is_authoritative,
    }


def package_dict(ctx: Ctx, entry: CatalogEntry) -> dict[str, Any]:
    tags = [
        {"name": k, "display_name": k, "state": "active", "vocabulary_id": None} for k in split_keywords(entry.keywords)
    ]
    cls = entry.catalog_class
    active = entry.status in ACTIVE_STATUSES
    return {
        "id": entry.code,
        "name": slug(entry.code),
        "title": entry.name,
        "type": "dataset",
        "notes": entry.summary,
        "url": f"{ctx.base}/catalog/{entry.id}",
        "version": str(entry.version),
        "state": "active" if active else "deleted" if entry.status == "revoked" else "draft",
        "private": not active,
        "isopen": entry.is_open,
        "license_id": "notspecified",
        "license_title": "License not specified",
        "author": entry.provider.name,
        "author_email": None,
        "maintainer": entry.metadata_maintainer or entry.provider_unit or entry.provider.name,
        "maintainer_email": None,
        "creator_user_id": None,
        "metadata_created": timestamp(entry.created_at),
        "metadata_modified": timestamp(entry.modified_at),
        "owner_org": entry.provider_code,
        "organization": organization_dict(entry.provider),
        "groups": [
            {
                "id": cls.code,
                "name": cls.code,
                "title": cls.name,
                "display_name": cls.name,
                "description": cls.description or "",
            }
        ],
        "tags": tags,
        "num_tags": len(tags),
        "resources": [resource_dict(ctx, entry)],
        "num_resources": 1,
        "extras": extras(ctx, entry),
        "relationships_as_object": [],
        "relationships_as_subject": [],
    }


# ---------------------------------------------------------------- actions


def package_search(ctx: Ctx, data: dict[str, Any]) -> dict[str, Any]:
    """Search datasets: q, fq, rows, start, sort, facet.field (CKAN semantics)."""
    rows = int_param(data, "rows", 10, 0, MAX_ROWS)
    start = int_param(data, "start", 0)
    sort = sort_param(data.get("sort"))
    fields = list_param(data, "facet.field")
    facet_limit = int_param(data, "facet.limit", 50, -1)
    query = parse_query(ctx.session, str(data.get("q") or ""), str(data.get("fq") or ""))
    if query.impossible:
        return _search_out(ctx, fields, facet_limit, None, [])
    drafts = bool_param(data, "include_private") or bool_param(data, "include_drafts")
    params = finder.SearchParams(
        q=" ".join(query.words),
        sort=sort,
        limit=max(rows, 1),
        offset=start,
        facets=bool(fields),
        status=None if drafts else "published",
        **query.filters,
    )
    result = finder.search(ctx.session, ctx.principal, params, ctx.anonymous)
    return _search_out(ctx, fields, facet_limit, result, result.entries if rows else [])


def _search_out(
    ctx: Ctx,
    fields: list[str],
    facet_limit: int,
    result: finder.SearchResult | None,
    entries: list[CatalogEntry],
) -> dict[str, Any]:
    search_facets: dict[str, Any] = {}
    for name in fields:
        values = result.facets.get(FACETS.get(name, ""), []) if result else []
        if facet_limit >= 0:
            values = values[:facet_limit]
        items = [{"name": v, "display_name": label, "count": n} for v, label, n in values]
        search_facets[name] = {"title": name, "items": items}
    return {
        "count": result.total if result else 0,
        "sort": None,
        "results": [package_dict(ctx, e) for e in entries],
        "facets": {k: {i["name"]: i["count"] for i in v["items"]} for k, v in search_facets.items()},
        "search_facets": search_facets,
    }


def package_show(ctx: Ctx, data: dict[str, Any]) -> dict[str, Any]:
    """One dataset by 信息资源代码, CKAN name (slug) or numeric id."""
    ident = str(data.get("id") or data.get("name") or "").strip()
    if not ident:
        raise validation_error("id", "Missing value")
    entry_id = resolve_entry_id(ctx.session, ident)
    if entry_id is None:
        raise NotFound("信息资源", "Catalog entry")
    return package_dict(ctx, service.get_entry(ctx.session, ctx.principal, entry_id, ctx.anonymous))


def resolve_entry_id(session: Session, ident: str) -> int | None:
    """Exact code first (indexed), then the internal id, then a slug back to its code."""
    for code in dict.fromkeys((ident, ident.upper())):
        found = session.scalar(select(CatalogEntry.id).where(CatalogEntry.code == code))
        if found is not None:
            return int(found)
    if ident.isdigit():
        return int(ident)
    # A slug replaced runs of other characters by "-": match loosely, then exactly.
    pattern = ident.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").replace("-", "%")
    rows = session.execute(
        select(CatalogEntry.id, CatalogEntry.code).where(func.lower(CatalogEntry.code).like(pattern, escape="\\"))
    )
    return next((int(i) for i, code in rows if slug(code) == ident), None)


def package_list(ctx: Ctx, data: dict[str, Any]) -> list[str]:
    """Names of the published datasets the caller may see, by code."""
    limit = int_param(data, "limit", 0)
    offset = int_param(data, "offset", 0)
    stmt = _published(ctx, select(CatalogEntry.code)).order_by(CatalogEntry.code).offset(offset)
    if limit:
        stmt = stmt.limit(limit)
    return [slug(code) for code in ctx.session.scalars(stmt)]


def _published(ctx: Ctx, stmt: Any) -> Any:
    """The service's visibility rule, narrowed to published entries (CKAN's "active")."""
    vis = service.visibility_clause(ctx.principal, ctx.anonymous)
    published = CatalogEntry.status == "published"
    return stmt.where(and_(vis, published) if vis is not None else published)


def package_counts(ctx: Ctx) -> dict[int, int]:
    stmt = _published(ctx, select(CatalogEntry.provider_id, func.count()))
    return {int(d): int(n) for d, n in ctx.session.execute(stmt.group_by(CatalogEntry.provider_id))}


def visible_departments(ctx: Ctx, counts: dict[int, int]) -> list[Department]:
    """Signed-in callers see every department; the public only those whose
    resources it can already see (the department list itself is not public)."""
    depts = list(ctx.session.scalars(select(Department)))
    if ctx.principal.is_authenticated:
        return depts
    return [d for d in depts if counts.get(d.id)]


ORG_SORTS: dict[str, tuple[Callable[[Any], Any], bool]] = {
    "name asc": (lambda o: o["name"], False),
    "name desc": (lambda o: o["name"], True),
    "title asc": (lambda o: o["title"], False),
    "title desc": (lambda o: o["title"], True),
    # Ties by name ascending, as CKAN does.
    "package_count desc": (lambda o: (-o["package_count"], o["name"]), False),
    "package_count asc": (lambda o: (o["package_count"], o["name"]), False),
}


def organization_list(ctx: Ctx, data: dict[str, Any]) -> list[Any]:
    """Departments: names, or full dicts with ``all_fields=true``."""
    sort = " ".join(str(data.get("sort") or "name asc").lower().split())
    if sort in ("name", "title", "package_count"):
        sort += " desc" if sort == "package_count" else " asc"
    if sort not in ORG_SORTS:
        raise validation_error("sort", "sort 须为 " + " / ".join(ORG_SORTS) + " (Unsupported sort)")
    counts = package_counts(ctx)
    orgs = [organization_dict(d, counts.get(d.id, 0)) for d in visible_departments(ctx, counts)]
    key, reverse = ORG_SORTS[sort]
    orgs.sort(key=key, reverse=reverse)
    offset, limit = int_param(data, "offset", 0), int_param(data, "limit", 0)
    orgs = orgs[offset : offset + limit] if limit else orgs[offset:]
    return orgs if bool_param(data, "all_fields") else [o["name"] for o in orgs]


def organization_show(ctx: Ctx, data: dict[str, Any]) -> dict[str, Any]:
    """One department by code, with its number of published datasets."""
    ident = str(data.get("id") or "").strip()
    if not ident:
        raise validation_error("id", "Missing value")
    dept = ctx.session.scalar(select(Department).where(func.lower(Department.code) == ident.lower()))
    counts = package_counts(ctx)
    if dept is None or dept not in visible_departments(ctx, counts):
        raise NotFound("部门", "Organization")
    out = organization_dict(dept, counts.get(dept.id, 0))
    if bool_param(data, "include_datasets"):
        params = finder.SearchParams(
            provider=dept.code, status="published", sort="modified", limit=MAX_ROWS, facets=False
        )
        found = finder.search(ctx.session, ctx.principal, params, ctx.anonymous)
        out["packages"] = [package_dict(ctx, e) for e in found.entries]
    return out


def status_show(ctx: Ctx, data: dict[str, Any]) -> dict[str, Any]:
    """Who this site is; clients check ``ckan_version`` before they talk to it."""
    return {
        "site_title": "数据通",
        "site_description": "政务信息资源共享交换平台",
        "site_url": ctx.base,
        "ckan_version": CKAN_VERSION,
        "error_emails_to": None,
        "locale_default": "zh_Hans_CN",
        "extensions": ["datatong", "datatong_dcat"],
        "datatong_version": __version__,
        "dcat_catalog": f"{ctx.base}/api/v1/catalog/dcat.jsonld",
    }


def help_show(ctx: Ctx, data: dict[str, Any]) -> str:
    """The documentation of an action."""
    name = str(data.get("name") or "")
    if name not in ACTIONS:
        raise NotFound("接口", "Action")
    return (ACTIONS[name].__doc__ or "").strip()


ACTIONS: dict[str, Callable[[Ctx, dict[str, Any]], Any]] = {
    "package_search": package_search,
    "package_show": package_show,
    "package_list": package_list,
    "organization_list": organization_list,
    "organization_show": organization_show,
    "status_show": status_show,
    "help_show": help_show,
}


# ---------------------------------------------------------------- HTTP


def ckan_principal(request: Request, session: Session) -> Principal:
    """CKAN clients send the key bare in Authorization or X-CKAN-API-Key."""
    key = (request.headers.get("x-ckan-api-key") or request.headers.get("authorization") or "").strip()
    if key.lower().startswith("bearer "):
        key = key[7:].strip()
    if key:
        return principal_from_token(session, request.app.state.settings.secret_key, key)
    return get_principal(request, session)


def run_action(request: Request, session: Session, action: str, data: dict[str, Any]) -> Any:
    if action not in ACTIONS:
        raise CkanError("Bad Request", f"Bad request - Action name not known: {action}", 400)
    ctx = Ctx(
        session,
        ckan_principal(request, session),
        request.app.state.settings.anonymous_catalog,
        base_url(request),
    )
    try:
        return ACTIONS[action](ctx, data)
    except AppError as exc:
        raise from_app_error(exc) from exc


ACTION_SUMMARY = "CKAN 兼容接口（package_search、package_show、organization_list 等）"
ACTION_METHODS = ("GET", "POST")
OTHER_METHODS = ["HEAD", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "QUERY"]


class CkanErrorBody(BaseModel):
    # Field errors ride along under the field's name: {"id": ["Missing value"]}.
    model_config = ConfigDict(extra="allow")
    type_: str = Field(alias="__type", description="Validation Error / Not Found Error / Authorization Error …")
    message: str


class CkanErrorOut(BaseModel):
    help: str
    success: Literal[False]
    error: CkanErrorBody


class CkanOut(BaseModel):
    help: str
    success: Literal[True]
    result: Any


# The actions' parameters, for the OpenAPI document: which apply depends on the action
# (see help_show); GET sends them as strings, a POST body (ckanapi) as JSON values.
PARAMETERS: dict[str, tuple[dict[str, Any], str]] = {
    "id": ({"type": "string"}, "package_show / organization_show：代码、名称或编号"),
    "name": ({"type": "string"}, "help_show：接口名"),
    "q": ({"type": "string"}, "package_search：检索词，可含 字段:值"),
    "fq": ({"type": "string"}, "package_search：过滤条件 organization:、res_format:、groups: …"),
    "rows": ({"type": "integer"}, f"package_search：条数 0–{MAX_ROWS}"),
    "start": ({"type": "integer"}, "package_search：偏移"),
    "sort": ({"type": "string"}, "排序，如 metadata_modified desc、name asc"),
    "facet.field": ({"type": "array", "items": {"type": "string"}}, "package_search：分面字段（JSON 数组）"),
    "facet.limit": ({"type": "integer"}, "package_search：每个分面的条数，-1 为不限"),
    "include_private": ({"type": "boolean"}, "package_search：包括调用者可见的未发布资源"),
    "include_drafts": ({"type": "boolean"}, "同 include_private"),
    "limit": ({"type": "integer"}, "package_list / organization_list：条数"),
    "offset": ({"type": "integer"}, "package_list / organization_list：偏移"),
    "all_fields": ({"type": "boolean"}, "organization_list：返回完整字典"),
    "include_datasets": ({"type": "boolean"}, "organization_show：包括其数据集"),
}
GET_PARAMETERS = {
    "parameters": [
        {"name": name, "in": "query", "required": False, "description": text, "schema": {"type": "string"}}
        for name, (_schema, text) in PARAMETERS.items()
    ]
}
POST_PARAMETERS = {
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        name: {**schema, "description": text} for name, (schema, text) in PARAMETERS.items()
                    },
                }
            }
        },
    }
}
# CKAN's envelope, not the platform's {error: {code, …}}: CKAN clients read it.
ACTION_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": CkanOut, "description": "CKAN 成功结果 {help, success: true, result}"},
    "4XX": {"model": CkanErrorOut, "description": "CKAN 错误 {help, success: false, error: {__type, message}}"},
}


def ckan_error_response(request: Request, action: str, err: CkanError) -> JSONResponse:
    help_url = f"{base_url(request)}/api/3/action/help_show?name={action}"
    headers = {"Allow": ", ".join(ACTION_METHODS)} if err.status == 405 else None
    return JSONResponse({"help": help_url, "success": False, "error": err.body()}, err.status, headers=headers)


# One operation id per method: a shared one makes the OpenAPI document ambiguous.
@router.get(
    "/api/3/action/{action}",
    summary=ACTION_SUMMARY,
    operation_id="ckan_action_get",
    responses=ACTION_RESPONSES,
    openapi_extra=GET_PARAMETERS,
)
@router.post(
    "/api/3/action/{action}",
    summary=ACTION_SUMMARY,
    operation_id="ckan_action_post",
    responses=ACTION_RESPONSES,
    openapi_extra=POST_PARAMETERS,
)
# ckanapi calls the unversioned path, as CKAN itself allows.
@router.api_route("/api/action/{action}", methods=list(ACTION_METHODS), include_in_schema=False)
def ckan_action(
    action: str,
    request: Request,
    parsed: Parsed = Depends(action_data),
    session: Session = Depends(get_session),
) -> JSONResponse:
    help_url = f"{base_url(request)}/api/3/action/help_show?name={action}"
    try:
        if parsed.error:
            raise parsed.error
        result = run_action(request, session, action, parsed.data)
    except AppError as exc:  # raised while finding out who is calling
        return ckan_error_response(request, action, from_app_error(exc))
    except CkanError as err:
        return ckan_error_response(request, action, err)
    return JSONResponse({"help": help_url, "success": True, "result": result})


@router.api_route("/api/3/action/{action}", methods=OTHER_METHODS, include_in_schema=False)
@router.api_route("/api/action/{action}", methods=OTHER_METHODS, include_in_schema=False)
def ckan_method_not_allowed(action: str, request: Request) -> JSONResponse:
    """Any other method on an action path is refused in CKAN's envelope too."""
    err = CkanError("Method Not Allowed", f"Method not allowed - {request.method} (use GET or POST)", 405)
    return ckan_error_response(request, action, err)


@router.get("/api/3", include_in_schema=False)
def api_version() -> dict[str, int]:
    """Clients probe the API version before choosing paths."""
    return {"version": 3}
