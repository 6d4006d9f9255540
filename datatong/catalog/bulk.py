"""Bulk import of catalog entries (Excel import, demo, benchmark): the same rows as
``service.create_entry`` writes, through the drivers' bulk paths."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from datatong.audit import service as audit
from datatong.catalog import search as fts
from datatong.catalog import vocab
from datatong.catalog.models import CatalogClass
from datatong.catalog.schemas import EntryIn
from datatong.catalog.service import ENTRY_FIELDS, reserve_codes
from datatong.db import is_sqlite, utcnow
from datatong.orgs.models import Department
from datatong.orgs.service import Principal


@dataclass
class ImportResult:
    created: int = 0
    codes: list[str] = field(default_factory=list)


# Same rows as service.create_entry (tests/test_demo.py compares the two); most of the
# cost is the search index, hence the helpers in search.py.

_ENTRY_VALUE_FIELDS = [n for n in ENTRY_FIELDS if n not in ("class_code", "provider_code", "release_date")]
_ENTRY_COLUMNS = [
    "id",
    "code",
    *_ENTRY_VALUE_FIELDS,
    "class_id",
    "class_code",
    "catalog_type",
    "provider_id",
    "provider_code",
    "status",
    "version",
    "created_by_id",
    "created_at",
    "modified_at",
    "metadata_updated_at",
    "release_date",
]
_ITEM_COLUMNS = [
    "entry_id",
    "position",
    "name",
    "code",
    "data_type",
    "length",
    "description",
    "sensitivity",
    "is_authoritative",
]
_VERSION_COLUMNS = [
    "entry_id",
    "version",
    "action",
    "status",
    "actor_id",
    "actor_name",
    "reason",
    "changes",
    "created_at",
]


@dataclass
class _Coded:
    """What the code generator reads of an entry."""

    code: str | None
    class_code: str
    provider_code: str | None


def _prefix(e: _Coded | EntryIn, principal: Principal) -> str:
    return f"{e.class_code.strip()}-{e.provider_code or principal.department_code}"


def _reserve_all(session: Session, entries: list[EntryIn], principal: Principal) -> dict[str, int]:
    """The next free sequence number per code prefix, reserved for the whole import at
    once (one statement per prefix instead of one per prefix and chunk)."""
    wanted: dict[str, int] = {}
    for e in entries:
        if not e.code:
            p = _prefix(e, principal)
            wanted[p] = wanted.get(p, 0) + 1
    return {p: reserve_codes(session, p, n) for p, n in wanted.items()}


def _take_code(nxt: dict[str, int], prefix: str) -> str:
    seq = nxt[prefix]
    nxt[prefix] = seq + 1
    return f"{prefix}-{seq:06d}"


def _fast_items(e: EntryIn) -> list[tuple[Any, ...]]:
    """(name, code, type, length, description, sensitivity, authoritative) as _normalise
    would leave them: names stripped, fixed widths filled in, types upper-cased."""
    return [
        (
            i.name.strip(),
            i.code,
            i.data_type.strip().upper(),
            i.length or vocab.FIXED_LENGTH.get(i.data_type),
            i.description,
            i.sensitivity,
            i.is_authoritative,
        )
        for i in e.items
    ]


def _fast_values(e: EntryIn) -> list[Any]:
    values = [getattr(e, n) for n in _ENTRY_VALUE_FIELDS]
    values[0] = e.name.strip()
    if e.share_type == "none":  # as _normalise: no share method for what is not shared
        values[_ENTRY_VALUE_FIELDS.index("share_method")] = None
        values[_ENTRY_VALUE_FIELDS.index("share_subtype")] = None
    return values


def bulk_create(
    session: Session,
    principal: Principal,
    entries: list[EntryIn],
    *,
    status: str = "draft",
    reason: str | None = None,
    progress: Callable[[int], None] | None = None,
    chunk: int = 5_000,
    keep_codes: bool = True,
) -> ImportResult:
    """Create many entries in the caller's transaction (all or nothing).

    Entries are checked first by ``check_import`` (the caller reports errors by row).
    Rows go through the drivers' bulk paths (executemany on SQLite, COPY on PostgreSQL)
    without ORM objects, and Python prepares a chunk while a second thread writes the
    one before, so 470,000 entries import in about a minute."""
    result = ImportResult()
    nxt = _reserve_all(session, entries, principal)
    lookup = _BulkLookup(
        {c.code: c for c in session.scalars(select(CatalogClass))},
        {d.code: d for d in session.scalars(select(Department))},
        is_sqlite(session.get_bind()),
        utcnow(),
    )
    late: list[dict[str, Any]] = []  # index rows the database must build itself
    with fts.bulk_load(session, len(entries)) as logged:
        ids = fts.new_ids(session, "catalog_entry", len(entries))
        with fts.BulkWriter(session) as writer:
            for start in range(0, len(entries), chunk):
                part, part_ids = entries[start : start + chunk], ids[start : start + chunk]
                codes = [e.code or _take_code(nxt, _prefix(e, principal)) for e in part]
                late += _bulk_chunk(writer, principal, lookup, part, part_ids, codes, status, reason)
                logged(part_ids[0], part_ids[-1])
                result.created += len(part)
                if keep_codes:
                    result.codes.extend(codes)
                if progress:
                    progress(len(part))
        fts.index_rows(session, late)
    providers = sorted({e.provider_code or principal.department_code or "" for e in entries})
    audit.record(
        session,
        principal,
        "catalog.entry.import",
        rows=result.created,
        subject_department=providers[0] if len(providers) == 1 else None,
        detail={"status": status, "providers": providers[:50], "reason": reason},
    )
    return result


@dataclass
class _BulkLookup:
    classes: dict[str, CatalogClass]
    depts: dict[str, Department]
    sqlite: bool
    now: datetime


def _bulk_chunk(
    writer: fts.BulkWriter,
    principal: Principal,
    lookup: _BulkLookup,
    part: list[EntryIn],
    ids: list[int],
    codes: list[str],
    status: str,
    reason: str | None,
) -> list[dict[str, Any]]:
    """Queue one chunk: entries, their items, first versions and index rows."""
    classes, depts, sqlite, now = lookup.classes, lookup.depts, lookup.sqlite, lookup.now
    stamp, day = (fts.sqlite_value(now), fts.sqlite_value(now.date())) if sqlite else (now, now.date())
    actor_id = principal.id if principal.kind == "user" else None
    rows: list[tuple[Any, ...]] = []
    items: list[tuple[Any, ...]] = []
    index: list[tuple[int, list[str], list[str]]] = []
    for eid, e, code in zip(ids, part, codes, strict=True):
        cls = classes[e.class_code.strip()]
        prov = depts[e.provider_code or (principal.department_code or "")]
        release = e.release_date or (now.date() if status == "published" else None)
        rows.append(
            (
                eid,
                code,
                *_fast_values(e),
                cls.id,
                cls.code,
                cls.code[0],
                prov.id,
                prov.code,
                status,
                1,
                actor_id,
                stamp,
                stamp,
                day,
                fts.sqlite_value(release) if sqlite else release,
            )
        )
        its = _fast_items(e)
        items.extend((eid, pos, *it) for pos, it in enumerate(its))
        title, body = fts.document_tokens(e.name, prov.name, e.summary, e.keywords, [it[0] for it in its])
        index.append((eid, title, body))
    writer.put("catalog_entry", _ENTRY_COLUMNS, rows)
    writer.put("catalog_item", _ITEM_COLUMNS, items)
    writer.put(
        "catalog_entry_version",
        _VERSION_COLUMNS,
        [(eid, 1, "import", status, actor_id, principal.display_name, reason, "[]", stamp) for eid in ids],
    )
    table_name, columns, index_rows, late = fts.index_batch(index, sqlite)
    writer.put(table_name, columns, index_rows)
    return late
