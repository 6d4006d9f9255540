"""Finding entries: keyword search with facets and keyset pages (the rules of who sees
what come from service.py)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, literal_column, or_, select, text
from sqlalchemy.orm import Session

from datatong.catalog import search as fts
from datatong.catalog import vocab
from datatong.catalog.models import CatalogClass, CatalogEntry
from datatong.catalog.service import can_view, visibility_clause
from datatong.db import is_sqlite
from datatong.errors import Unauthenticated, invalid
from datatong.orgs.models import Department
from datatong.orgs.service import Principal

# ---------------------------------------------------------------- search
# Answered by the in-memory index of search.py when it can (counts and facets of huge
# matches in a few milliseconds), else by SQL; both give the same answer. Relevance is
# "most query words in the name first, then newest first": a ranking both paths can
# compute exactly, for any number of matches, and the one catalog users expect (a
# resource named after the words beats one that mentions them in a data item).


@dataclass
class SearchParams:
    q: str = ""
    provider: str | None = None
    class_code: str | None = None
    share_type: str | None = None
    update_cycle: str | None = None
    format: str | None = None
    open: bool | None = None
    status: str | None = None
    modified_since: datetime | None = None
    sort: str = "relevance"
    limit: int = 20
    cursor: str | None = None
    offset: int | None = None  # only for CKAN's start=; keyset pagination is preferred
    facets: bool = True


@dataclass
class SearchResult:
    total: int
    entries: list[CatalogEntry]
    next_cursor: str | None
    facets: dict[str, list[tuple[str, str, int]]]


SORTS = ("relevance", "modified", "name", "code")


@dataclass
class _Found:
    """What either search path found: the page as ids, the sort value of its last row."""

    total: int
    ids: list[int]
    last: tuple[Any, int] | None  # (sort value, entry id) for the next cursor
    more: bool
    facets: dict[str, list[tuple[str, int]]]


def _encode_cursor(sort: str, value: Any, entry_id: int) -> str:
    if isinstance(value, datetime):
        value = fts.iso(value)
    elif isinstance(value, tuple):  # relevance: (title hits, modified)
        value = [value[0], fts.iso(value[1])]
    raw = json.dumps([sort, value, entry_id], ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, sort: str) -> tuple[Any, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        kind, value, entry_id = json.loads(raw)
        if kind != sort or not isinstance(entry_id, int) or isinstance(entry_id, bool):
            raise ValueError
        if sort == "modified":
            value = datetime.fromisoformat(value)
        elif sort == "relevance":
            hits, modified = value
            if not isinstance(hits, int) or isinstance(hits, bool):
                raise ValueError
            value = (hits, datetime.fromisoformat(modified))
        elif not isinstance(value, str):
            raise ValueError
        return value, entry_id
    except (ValueError, TypeError, json.JSONDecodeError):
        raise invalid(
            "search.cursor_invalid",
            "翻页游标无效，请从第一页重新查询",
            "Invalid cursor; start again from the first page",
            "cursor",
        ) from None


def _filters(params: SearchParams, principal: Principal, anonymous_catalog: str) -> list[Any]:
    conds: list[Any] = []
    vis = visibility_clause(principal, anonymous_catalog)
    if vis is not None:
        conds.append(vis)
    if params.provider:
        conds.append(CatalogEntry.provider_code == params.provider)
    if params.class_code:
        conds.append(CatalogEntry.class_code.startswith(params.class_code, autoescape=True))
    if params.share_type:
        conds.append(CatalogEntry.share_type == params.share_type)
    if params.update_cycle:
        conds.append(CatalogEntry.update_cycle == params.update_cycle)
    if params.format:
        conds.append(CatalogEntry.format_category == params.format)
    if params.open is not None:
        conds.append(CatalogEntry.is_open.is_(params.open))
    if params.status:
        conds.append(CatalogEntry.status == params.status)
    if params.modified_since is not None:
        conds.append(CatalogEntry.modified_at >= params.modified_since)
    return conds


def search(
    session: Session, principal: Principal, params: SearchParams, anonymous_catalog: str = "open"
) -> SearchResult:
    if params.sort not in SORTS:
        raise invalid(
            "search.sort_invalid",
            "排序方式须为 relevance/modified/name/code",
            "Sort must be relevance, modified, name or code",
            "sort",
        )
    limit = max(1, min(params.limit, 1000))
    tokens = fts.query_tokens(params.q)
    visibility = _visibility(principal, anonymous_catalog)
    sort = params.sort if (params.sort != "relevance" or tokens) else "modified"
    after = _decode_cursor(params.cursor, sort) if params.cursor else None
    found = _search_index(session, params, tokens, visibility, sort, after, limit)
    if found is None:
        found = _search_sql(session, principal, params, tokens, sort, after, limit, anonymous_catalog)
    entries = _load_page(session, principal, found.ids, anonymous_catalog)
    next_cursor = _encode_cursor(sort, *found.last) if found.more and found.last else None
    facets = _label_facets(session, found.facets) if params.facets else {}
    return SearchResult(found.total, entries, next_cursor, facets)


def _visibility(principal: Principal, anonymous_catalog: str) -> tuple[str, int | None]:
    """visibility_clause, as the in-memory index takes it."""
    if principal.is_platform_admin:
        return "all", None
    if principal.is_authenticated:
        return "dept", principal.department_id
    if anonymous_catalog in ("published", "open"):
        return anonymous_catalog, None
    raise Unauthenticated()


def _load_page(session: Session, principal: Principal, ids: list[int], anonymous_catalog: str) -> list[CatalogEntry]:
    if not ids:
        return []
    by_id = {e.id: e for e in session.scalars(select(CatalogEntry).where(CatalogEntry.id.in_(ids)))}
    # The index may lag a commit made a moment ago: never show what the caller may not see.
    return [by_id[i] for i in ids if i in by_id and can_view(principal, by_id[i], anonymous_catalog)]


# ---------------------------------------------------------------- search: in-memory index


def _search_index(
    session: Session,
    params: SearchParams,
    tokens: list[str],
    visibility: tuple[str, int | None],
    sort: str,
    after: tuple[Any, int] | None,
    limit: int,
) -> _Found | None:
    if params.modified_since is not None or not all(fts.SAFE_TOKEN.fullmatch(t) for t in tokens):
        return None
    query = fts.IndexQuery(
        tokens=tokens,
        visibility=visibility,
        sort=sort,
        limit=limit,
        provider=params.provider or None,
        class_prefix=params.class_code or None,
        share_type=params.share_type or None,
        update_cycle=params.update_cycle or None,
        format=params.format or None,
        open=params.open,
        status=params.status or None,
        after=_index_key(sort, after) if after else None,
        offset=params.offset or 0,
        facets=params.facets,
    )
    hits = fts.search_index(session, query)
    if hits is None:
        return None
    last = _cursor_value(sort, hits.keys[-1], is_sqlite(session.get_bind())) if hits.keys else None
    return _Found(hits.total, hits.ids, last, hits.more, hits.facets)


def _index_key(sort: str, after: tuple[Any, int]) -> tuple[Any, ...]:
    """A cursor as the index's ascending sort key."""
    value, entry_id = after
    if sort == "modified":
        return (-fts.micros(value), -entry_id)
    if sort == "relevance":
        return (-value[0], -fts.micros(value[1]), -entry_id)
    return (value, entry_id)


def _cursor_value(sort: str, key: tuple[Any, ...], sqlite: bool) -> tuple[Any, int]:
    """The index's sort key of a row as (cursor value, entry id)."""
    if sort == "modified":
        return fts.from_micros(-key[0], naive=sqlite), -key[1]
    if sort == "relevance":
        return (-key[0], fts.from_micros(-key[1], naive=sqlite)), -key[2]
    return key[0], key[1]


# ---------------------------------------------------------------- search: SQL


def _search_sql(
    session: Session,
    principal: Principal,
    params: SearchParams,
    tokens: list[str],
    sort: str,
    after: tuple[Any, int] | None,
    limit: int,
    anonymous_catalog: str,
) -> _Found:
    sqlite = is_sqlite(session.get_bind())
    conds = _filters(params, principal, anonymous_catalog)
    base = select(CatalogEntry.id)
    if tokens:
        match = fts.fts_query(tokens, sqlite)
        if sqlite:
            base = base.join(fts.FTS_TABLE, fts.FTS_TABLE.c.rowid == CatalogEntry.id)
            conds.append(text("catalog_fts MATCH :fts_q").bindparams(fts_q=match))
        else:
            base = base.join(fts.PG_TABLE, fts.PG_TABLE.c.entry_id == CatalogEntry.id)
            conds.append(fts.PG_TABLE.c.tsv.op("@@")(func.to_tsquery(literal_column("'simple'"), match)))
    where = and_(*conds) if conds else None
    total = session.scalar(select(func.count()).select_from(_where(base, where).subquery())) or 0
    keys = _sql_keys(sort, tokens, sqlite)
    stmt = _where(base.add_columns(*(k for k, _ in keys)), where)
    if after:
        stmt = stmt.where(_after(keys, _key_values(sort, after)))
    stmt = stmt.order_by(*(k.desc() if desc else k for k, desc in keys)).limit(limit + 1)
    if params.offset:
        stmt = stmt.offset(params.offset)
    rows = session.execute(stmt).all()
    page = rows[:limit]
    last = _sql_cursor_value(sort, page[-1]) if page else None
    facets = _facets(session, base, where) if params.facets else {}
    return _Found(total, [r[0] for r in page], last, len(rows) > limit, facets)


def _where(stmt: Any, where: Any) -> Any:
    return stmt.where(where) if where is not None else stmt


def _sql_keys(sort: str, tokens: list[str], sqlite: bool) -> list[tuple[Any, bool]]:
    """(column, descending) of a sort, the entry id last."""
    if sort == "modified":
        return [(CatalogEntry.modified_at, True), (CatalogEntry.id, True)]
    if sort == "relevance":
        return [(_title_hits(tokens, sqlite), True), (CatalogEntry.modified_at, True), (CatalogEntry.id, True)]
    col = CatalogEntry.name if sort == "name" else CatalogEntry.code
    return [(col, False), (CatalogEntry.id, False)]


def _title_hits(tokens: list[str], sqlite: bool) -> Any:
    """How many of the query tokens occur in the entry's name (title column)."""
    from sqlalchemy import Integer, case, cast, column

    terms: list[Any] = []
    for i, tok in enumerate(tokens):
        expr = fts.title_query(tok, sqlite)
        if sqlite:
            sub = (
                text(f"SELECT rowid FROM catalog_fts WHERE catalog_fts MATCH :th{i}")
                .bindparams(**{f"th{i}": expr})
                .columns(column("rowid"))
            )
            terms.append(case((CatalogEntry.id.in_(sub), 1), else_=0))
        else:
            tsq = func.to_tsquery(literal_column("'simple'"), expr)
            terms.append(cast(fts.PG_TABLE.c.tsv.op("@@")(tsq), Integer))
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total.label("title_hits")


def _key_values(sort: str, after: tuple[Any, int]) -> list[Any]:
    value, entry_id = after
    return [*value, entry_id] if sort == "relevance" else [value, entry_id]


def _after(keys: list[tuple[Any, bool]], values: list[Any]) -> Any:
    """Rows after ``values`` in the order of ``keys`` (keyset pagination)."""
    alternatives = []
    for i, (col, desc) in enumerate(keys):
        equal = [k == v for (k, _), v in zip(keys[:i], values[:i], strict=True)]
        alternatives.append(and_(*equal, col < values[i] if desc else col > values[i]))
    return or_(*alternatives)


def _sql_cursor_value(sort: str, row: Any) -> tuple[Any, int]:
    if sort == "relevance":
        return (int(row[1]), row[2]), row[3]
    return row[1], row[2]


FACET_COLUMNS: dict[str, Any] = {
    "provider": CatalogEntry.provider_code,
    "class": func.substr(CatalogEntry.class_code, 1, 3),
    "share_type": CatalogEntry.share_type,
    "update_cycle": CatalogEntry.update_cycle,
    "format": CatalogEntry.format_category,
    "open": CatalogEntry.is_open,
}


def _facets(session: Session, base: Any, where: Any) -> dict[str, list[tuple[str, int]]]:
    """(value, count) per facet, most frequent first (ties by value, as the index)."""
    out: dict[str, list[tuple[str, int]]] = {}
    for name, col in FACET_COLUMNS.items():
        stmt = _where(base.with_only_columns(col.label("v"), func.count().label("n")), where).group_by(col)
        values = [(("true" if v else "false") if name == "open" else str(v), int(n)) for v, n in session.execute(stmt)]
        out[name] = sorted(values, key=lambda vn: (-vn[1], vn[0]))[:50]
    return out


# ---------------------------------------------------------------- search: facet labels


def _label_facets(session: Session, facets: dict[str, list[tuple[str, int]]]) -> dict[str, list[tuple[str, str, int]]]:
    """Labels of the values shown only: two small lookups instead of every department
    and class on each search."""
    providers = [v for v, _ in facets.get("provider", [])]
    classes = [v for v, _ in facets.get("class", [])]
    labels: dict[str, dict[str, str]] = {
        "provider": dict(
            session.execute(select(Department.code, Department.name).where(Department.code.in_(providers))).all()
        )
        if providers
        else {},
        "class": dict(
            session.execute(select(CatalogClass.code, CatalogClass.name).where(CatalogClass.code.in_(classes))).all()
        )
        if classes
        else {},
        **STATIC_FACET_LABELS,
    }
    return {name: [(v, labels[name].get(v, v), n) for v, n in values] for name, values in facets.items()}


STATIC_FACET_LABELS: dict[str, dict[str, str]] = {
    "share_type": vocab.SHARE_TYPES,
    "update_cycle": vocab.UPDATE_CYCLES,
    "format": vocab.FORMAT_CATEGORIES,
    "open": {"true": "向社会开放", "false": "不开放"},
}


def entries_for_export(
    session: Session, principal: Principal, params: SearchParams, anonymous_catalog: str = "open"
) -> Iterable[CatalogEntry]:
    """Every entry of a search, page by page (keyset), for export.

    The first page is read at once, so parameters the search refuses (an unknown sort,
    say) are refused before the caller starts writing a file."""
    params = SearchParams(**{**params.__dict__, "facets": False, "limit": 500, "cursor": None})
    first = search(session, principal, params, anonymous_catalog)
    return _export_pages(session, principal, params, anonymous_catalog, first)


def _export_pages(
    session: Session, principal: Principal, params: SearchParams, anonymous_catalog: str, result: SearchResult
) -> Iterator[CatalogEntry]:
    while True:
        yield from result.entries
        if not result.next_cursor:
            return
        params.cursor = result.next_cursor
        result = search(session, principal, params, anonymous_catalog)
