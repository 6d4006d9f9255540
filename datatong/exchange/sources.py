"""Data sources: a provider connects a published catalog entry to where its data lives.

Three kinds (models.SOURCE_KINDS): a table or view of an external SQL database (read with
the provider's read-only account), an uploaded CSV/Excel file loaded into a table the
platform manages (``exchange_file_<id>`` in the platform database), and an upstream HTTP
JSON API. Each data item of the entry that the source serves is mapped to a column (or a
JSON field); the key item orders pages and answers lookups.

Secrets (the password of a SQL URL, the token of an HTTP API) are sealed at rest with the
platform's data key (datatong/crypto.py) and never returned, logged or audited; the stored
URL has no password.

Who: the editors of the entry's provider department (catalog ``can_edit``) and the platform
admin change sources; every user of the provider department and the platform admin see
them; anyone else gets 404 (a source's existence is the provider's business).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy import make_url, select
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session

from datatong.audit.service import record
from datatong.catalog.models import CatalogEntry, DataItem
from datatong.catalog.service import can_edit
from datatong.crypto import seal
from datatong.db import get_by_id, utcnow
from datatong.errors import AppError, Conflict, Forbidden, NotFound, Unauthenticated, ValidationFailed, invalid
from datatong.exchange import netguard, readers
from datatong.exchange.models import CHANGE_KINDS, SOURCE_KINDS, DataSource, SourceField
from datatong.exchange.readers import SourceError, file_table_name, secret_aad
from datatong.orgs.service import Principal
from datatong.settings import Settings

SQL_BACKENDS = ("postgresql", "mysql", "mariadb", "sqlite")
URL_QUERY_KEYS = {"charset", "sslmode", "connect_timeout", "application_name", "target_session_attrs", "options"}
NAME_RE = re.compile(r"^[^\x00-\x1f\"`;]{1,200}$")  # a column, table or JSON field name
MAX_ERRORS = 50
BATCH = 5000


# ---------------------------------------------------------------- who


def _require_user(principal: Principal) -> None:
    if not principal.is_authenticated:
        raise Unauthenticated()


def may_see(principal: Principal, entry: CatalogEntry) -> bool:
    return principal.is_platform_admin or (
        principal.is_authenticated
        and principal.department_id is not None
        and principal.department_id == entry.provider_id
    )


def _not_found() -> NotFound:
    return NotFound("数据源", "Data source")


def entry_to_configure(session: Session, principal: Principal, entry_id: int) -> CatalogEntry:
    """The published entry ``principal`` may connect a data source to (else 404/403/409)."""
    _require_user(principal)
    entry = get_by_id(session, CatalogEntry, entry_id)
    if entry is None or (entry.status != "published" and not may_see(principal, entry)):
        raise NotFound("信息资源", "Catalog entry")
    if not can_edit(principal, entry):
        raise Forbidden(
            "只有信息资源提供部门的编目人员或平台管理员可以配置数据源",
            "Only editors of the providing department or the platform admin may configure data sources",
        )
    if entry.status != "published":
        raise Conflict(
            "exchange.entry_not_published",
            "信息资源尚未发布，不能配置数据源",
            "The catalog entry is not published; a data source cannot be connected yet",
        )
    return entry


def get_source(session: Session, principal: Principal, source_id: int) -> DataSource:
    _require_user(principal)
    source = get_by_id(session, DataSource, source_id)
    if source is None or not may_see(principal, source.entry):
        raise _not_found()
    return source


def source_to_edit(session: Session, principal: Principal, source_id: int) -> DataSource:
    """The source ``principal`` may change (else 404/403)."""
    source = get_source(session, principal, source_id)
    if not can_edit(principal, source.entry):
        raise Forbidden(
            "只有信息资源提供部门的编目人员或平台管理员可以配置数据源",
            "Only editors of the providing department or the platform admin may configure data sources",
        )
    return source


def list_sources(session: Session, principal: Principal, entry_id: int | None = None) -> list[DataSource]:
    _require_user(principal)
    stmt = select(DataSource).join(CatalogEntry, CatalogEntry.id == DataSource.entry_id).order_by(DataSource.id)
    if not principal.is_platform_admin:
        if principal.department_id is None:
            return []
        stmt = stmt.where(CatalogEntry.provider_id == principal.department_id)
    if entry_id is not None:
        stmt = stmt.where(DataSource.entry_id == entry_id)
    return list(session.scalars(stmt))


def source_for_entry(session: Session, entry_id: int) -> DataSource | None:
    """The source of an entry (for the query and verification services; no permission check)."""
    return session.scalar(select(DataSource).where(DataSource.entry_id == entry_id))


def source_by_entry_code(session: Session, code: str) -> DataSource | None:
    return session.scalar(
        select(DataSource).join(CatalogEntry, CatalogEntry.id == DataSource.entry_id).where(CatalogEntry.code == code)
    )


# ---------------------------------------------------------------- checks


def _name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value.strip()):
        raise invalid("exchange.bad_name", f"名称无效：{value!r}", f"Invalid name: {value!r}", field)
    return value.strip()


def _check_fields(entry: CatalogEntry, kind: str, fields: Mapping[str, str] | None, key_item: str) -> dict[str, str]:
    names = {item.name for item in entry.items}
    if kind == "file":
        # The managed table's columns are made here; the file's header names the items.
        chosen = list(fields or [item.name for item in entry.items])
        positions = {item.name: item.position for item in entry.items}
        mapping = {item: f"c{positions[item]}" for item in chosen if item in positions}
        unknown = [item for item in chosen if item not in positions]
    else:
        if not fields:
            raise invalid("exchange.fields_required", "请映射至少一个信息项", "Map at least one data item", "fields")
        unknown = [item for item in fields if item not in names]
        mapping = {item: _name(col, "fields") for item, col in fields.items() if item in names}
    if unknown:
        raise invalid(
            "exchange.unknown_item",
            f"不是该信息资源的信息项：{'、'.join(unknown)}",
            f"Not data items of this catalog entry: {', '.join(unknown)}",
            "fields",
        )
    if key_item not in mapping:
        raise invalid(
            "exchange.key_not_mapped",
            f"主键信息项必须映射：{key_item}",
            f"The key data item must be mapped: {key_item}",
            "key_item",
        )
    return mapping


def _split_sql_url(settings: Settings, principal: Principal, url: str, password: str | None) -> tuple[str, str | None]:
    """The URL without its password, and the password (from the URL or given apart)."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise invalid("exchange.bad_url", "数据库连接 URL 无效", "Invalid database URL", "url") from exc
    backend = parsed.get_backend_name()
    if backend not in SQL_BACKENDS:
        raise invalid(
            "exchange.bad_url",
            f"不支持的数据库：{backend}（可用 PostgreSQL、MySQL/MariaDB）",
            f"Unsupported database: {backend} (use PostgreSQL or MySQL/MariaDB)",
            "url",
        )
    if backend == "sqlite" and not principal.is_platform_admin:
        # A SQLite URL names a file on the platform's own server.
        raise invalid(
            "exchange.bad_url",
            "只有平台管理员可以配置 SQLite 数据源",
            "Only the platform admin may use SQLite sources",
            "url",
        )
    platform = make_url(settings.database_url)
    if backend != "sqlite" and (parsed.host, parsed.port, parsed.database) == (
        platform.host,
        platform.port,
        platform.database,
    ):
        raise invalid(
            "exchange.bad_url",
            "数据源不能是平台自身的数据库",
            "A data source cannot be the platform's own database",
            "url",
        )
    odd = sorted(set(parsed.query) - URL_QUERY_KEYS)
    if odd:
        # Driver options such as pymysql's read_default_file or local_infile, or libpq's
        # sslkey, would read files of the platform's server.
        raise invalid(
            "exchange.bad_url",
            f"URL 中不允许的参数：{', '.join(odd)}",
            f"Parameters not allowed in the URL: {', '.join(odd)}",
            "url",
        )
    secret = password if password else parsed.password
    bare = parsed._replace(password=None).render_as_string(hide_password=False)
    return bare, (str(secret) if secret else None)


def _check_http_url(url: str, settings: Settings) -> str:
    if not re.match(r"^https?://[^\s/]+", url or ""):
        raise invalid(
            "exchange.bad_url", "HTTP 数据源需要 http(s):// 地址", "An HTTP source needs an http(s):// URL", "url"
        )
    return netguard.check_url(url, settings.outbound_allow)


def _options_text(options: Mapping[str, Any] | str | None) -> str | None:
    if options is None:
        return None
    if isinstance(options, str):
        try:
            options = json.loads(options)
        except ValueError as exc:
            raise invalid(
                "exchange.bad_options", "options 不是 JSON 对象", "options is not a JSON object", "options"
            ) from exc
    if not isinstance(options, dict):
        raise invalid("exchange.bad_options", "options 不是 JSON 对象", "options is not a JSON object", "options")
    return json.dumps(options, ensure_ascii=False, sort_keys=True)


def _check_change(change_column: str | None, change_kind: str | None) -> tuple[str | None, str | None]:
    if change_kind is None and change_column is None:
        return None, None
    if change_kind not in CHANGE_KINDS or not change_column:
        raise invalid(
            "exchange.bad_change_tracking",
            "变更跟踪需要列名和方式（updated_at 或 increasing_id）",
            "Change tracking needs a column and a kind (updated_at or increasing_id)",
            "change_kind",
        )
    return _name(change_column, "change_column"), change_kind


def _set_fields(source: DataSource, mapping: dict[str, str], session: Session | None = None) -> None:
    if session is not None and source.fields:
        source.fields.clear()
        session.flush()  # the old rows go before the new ones (unique item per source)
    source.fields = [
        SourceField(position=i, item_name=item, column=col) for i, (item, col) in enumerate(mapping.items())
    ]


def _detail(source: DataSource) -> dict[str, Any]:
    """What the audit trail keeps of a source: never the secret."""
    return {
        "kind": source.kind,
        "url": source.url,
        "table": source.table_name,
        "key": source.key_column,
        "fields": {f.item_name: f.column for f in source.fields},
        "change": [source.change_column, source.change_kind],
        "has_secret": source.secret_sealed is not None,
        "enabled": source.enabled,
    }


# ---------------------------------------------------------------- changes


def create_source(
    session: Session,
    settings: Settings,
    principal: Principal,
    entry_id: int,
    kind: str,
    url: str | None = None,
    password: str | None = None,
    table_name: str | None = None,
    key_item: str = "",
    fields: Mapping[str, str] | None = None,
    change_column: str | None = None,
    change_kind: str | None = None,
    options: Mapping[str, Any] | str | None = None,
) -> DataSource:
    entry = entry_to_configure(session, principal, entry_id)
    if kind not in SOURCE_KINDS:
        raise invalid("exchange.bad_kind", f"数据源类型无效：{kind}", f"Invalid source kind: {kind}", "kind")
    if source_for_entry(session, entry.id) is not None:
        raise Conflict(
            "exchange.source_exists", "该信息资源已配置数据源", "This catalog entry already has a data source"
        )
    mapping = _check_fields(entry, kind, fields, key_item)
    change_column, change_kind = _check_change(change_column, change_kind)
    secret: str | None = None
    stored_url: str | None = None
    if kind == "sql":
        if not url:
            raise invalid("exchange.url_required", "请填写数据库连接 URL", "The database URL is required", "url")
        stored_url, secret = _split_sql_url(settings, principal, url, password)
        table_name = _name(table_name, "table_name")
    elif kind == "http":
        stored_url, secret, table_name = _check_http_url(url or "", settings), password or None, None
    else:
        stored_url, table_name = None, None
    now = utcnow()
    source = DataSource(
        entry_id=entry.id,
        kind=kind,
        url=stored_url,
        table_name=table_name,
        key_column=mapping[key_item],
        change_column=change_column,
        change_kind=change_kind,
        options=_options_text(options),
        status="untested",
        enabled=True,
        created_by=principal.username,
        created_at=now,
        updated_at=now,
    )
    _set_fields(source, mapping)
    session.add(source)
    session.flush()
    if kind == "file":
        source.table_name = file_table_name(source.id)
    if secret:
        source.secret_sealed = seal(secret, aad=secret_aad(source.id), settings=settings)
    session.flush()
    record(
        session,
        principal,
        "exchange.source.create",
        resource=f"source:{source.id}",
        subject_department=entry.provider_code,
        detail={"entry": entry.code, **_detail(source)},
    )
    return source


UNSET: Any = object()


def update_source(
    session: Session,
    settings: Settings,
    principal: Principal,
    source_id: int,
    *,
    url: str | None = UNSET,
    password: str | None = UNSET,
    table_name: str | None = UNSET,
    key_item: str | None = UNSET,
    fields: Mapping[str, str] | None = UNSET,
    change_column: str | None = UNSET,
    change_kind: str | None = UNSET,
    options: Mapping[str, Any] | str | None = UNSET,
    enabled: bool | None = UNSET,
) -> DataSource:
    """Change what is given (UNSET = keep). ``password=""`` removes the stored secret."""
    source = source_to_edit(session, principal, source_id)
    entry = source.entry
    before = _detail(source)
    current = {f.item_name: f.column for f in source.fields}
    if fields is not UNSET or key_item is not UNSET:
        old_key = next((i for i, c in current.items() if c == source.key_column), "")
        new_key = key_item if key_item not in (UNSET, None) else old_key
        mapping = _check_fields(entry, source.kind, fields if fields not in (UNSET, None) else current, new_key)
        _set_fields(source, mapping, session)
        source.key_column = mapping[new_key]
    new_secret: str | None = UNSET
    if url is not UNSET and url is not None:
        if source.kind == "sql":
            bare, in_url = _split_sql_url(settings, principal, url, None)
            source.url = bare
            if in_url:
                new_secret = in_url
        elif source.kind == "http":
            source.url = _check_http_url(url, settings)
    if password is not UNSET and password is not None:
        new_secret = password
    if new_secret is not UNSET:
        source.secret_sealed = seal(new_secret, aad=secret_aad(source.id), settings=settings) if new_secret else None
    if table_name is not UNSET and table_name is not None and source.kind == "sql":
        source.table_name = _name(table_name, "table_name")
    if change_column is not UNSET or change_kind is not UNSET:
        source.change_column, source.change_kind = _check_change(
            source.change_column if change_column is UNSET else change_column,
            source.change_kind if change_kind is UNSET else change_kind,
        )
    if options is not UNSET:
        source.options = _options_text(options)
    if enabled is not UNSET and enabled is not None:
        source.enabled = bool(enabled)
    source.updated_at = utcnow()
    source.status = "untested"
    session.flush()
    readers.forget(source.id)
    after = _detail(source)
    record(
        session,
        principal,
        "exchange.source.update",
        resource=f"source:{source.id}",
        subject_department=entry.provider_code,
        detail={
            "entry": entry.code,
            "changes": {k: {"from": before[k], "to": after[k]} for k in after if before[k] != after[k]},
            "secret_changed": new_secret is not UNSET,
        },
    )
    return source


def delete_source(session: Session, principal: Principal, source_id: int) -> None:
    source = source_to_edit(session, principal, source_id)
    detail = {"entry": source.entry.code, **_detail(source)}
    provider = source.entry.provider_code
    if source.kind == "file":
        session.execute(sa.text(f'DROP TABLE IF EXISTS "{file_table_name(source.id)}"'))
    session.delete(source)
    session.flush()
    readers.forget(source_id)
    record(
        session,
        principal,
        "exchange.source.delete",
        resource=f"source:{source_id}",
        subject_department=provider,
        detail=detail,
    )


@dataclass
class TestResult:
    ok: bool
    status: str
    error: dict[str, str] | None
    tested_at: datetime


def test_source(session: Session, settings: Settings, principal: Principal, source_id: int) -> TestResult:
    """Connect, check the table and every mapped column; keep the outcome on the source."""
    source = source_to_edit(session, principal, source_id)
    error: AppError | None = None
    try:
        reader = readers.reader_for(session, settings, source)
        if source.kind == "file" and source.rows is None:
            raise SourceError("source_table_missing", "尚未上传数据文件", "No data file has been uploaded yet")
        reader.test()
    except AppError as exc:
        error = exc
    now = utcnow()
    source.last_tested_at = now
    source.status = "ok" if error is None else "failing"
    source.last_error = None if error is None else f"{error.code}: {error.message} / {error.message_en}"
    session.flush()
    err = None if error is None else {"code": error.code, "message": error.message, "message_en": error.message_en}
    record(
        session,
        principal,
        "exchange.source.test",
        resource=f"source:{source.id}",
        subject_department=source.entry.provider_code,
        outcome="allowed",
        reason=None if error is None else error.code,
        detail={"entry": source.entry.code, "ok": error is None},
    )
    return TestResult(error is None, source.status, err, now)


# ---------------------------------------------------------------- file sources


@dataclass
class _Col:
    item: str
    column: str
    data_type: str
    length: int | None


def _sa_type(item: DataItem) -> sa.types.TypeEngine[Any]:
    t = item.data_type
    if t == "I":
        return sa.BigInteger()
    if t in ("N", "Y", "B", "F"):
        return sa.Numeric()
    if t == "D":
        return sa.Date()
    if t == "T":
        return sa.DateTime()
    if t == "L":
        return sa.Boolean()
    return sa.String(item.length) if item.length else sa.Text()


def file_table(source: DataSource) -> sa.Table:
    """The platform-managed table of a file source (its own MetaData: not in the schema
    Alembic manages)."""
    items = {i.name: i for i in source.entry.items}
    meta = sa.MetaData()
    cols = [sa.Column("_row", sa.Integer, primary_key=True, autoincrement=False)]
    for f in source.fields:
        cols.append(sa.Column(f.column, _sa_type(items[f.item_name]), unique=f.column == source.key_column))
    return sa.Table(file_table_name(source.id), meta, *cols)


_TRUE = {"1", "true", "t", "yes", "y", "是", "真"}
_FALSE = {"0", "false", "f", "no", "n", "否", "假"}


def _convert(col: _Col, raw: Any) -> tuple[Any, str | None]:
    """(value, problem) of one cell."""
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        return None, None
    t = col.data_type
    try:
        if t == "I":
            if isinstance(raw, float) and raw.is_integer():
                return int(raw), None
            return int(str(raw).strip()), None
        if t in ("N", "Y", "B", "F"):
            value = Decimal(str(raw).strip().replace(",", ""))
            if not value.is_finite():
                raise InvalidOperation
            return value, None
        if t == "D":
            if isinstance(raw, datetime):
                return raw.date(), None
            if isinstance(raw, date):
                return raw, None
            text = str(raw).strip().replace("/", "-")
            if re.fullmatch(r"\d{8}", text):
                text = f"{text[:4]}-{text[4:6]}-{text[6:]}"
            return date.fromisoformat(text), None
        if t == "T":
            if isinstance(raw, datetime):
                return raw, None
            text = str(raw).strip().replace("/", "-")
            if re.fullmatch(r"\d{14}", text):
                return datetime.strptime(text, "%Y%m%d%H%M%S"), None
            return datetime.fromisoformat(text), None
        if t == "L":
            text = str(raw).strip().lower()
            if text in _TRUE:
                return True, None
            if text in _FALSE:
                return False, None
            raise ValueError
    except (ValueError, InvalidOperation, ArithmeticError):
        label = {"I": "整数 integer", "D": "日期 date", "T": "日期时间 datetime", "L": "是/否 yes/no"}.get(
            t, "数值 number"
        )
        return None, f"应为{label}"
    text = raw.isoformat() if isinstance(raw, date | datetime) else str(raw)
    if isinstance(raw, float) and raw.is_integer():
        text = str(int(raw))
    if col.length and len(text) > col.length:
        return None, f"超过长度 {col.length} / longer than {col.length}"
    return text, None


def _csv_rows(stream: IO[bytes]) -> Iterator[list[str]]:
    """Rows of a CSV upload, read incrementally: UTF-8 (with or without BOM), else GBK."""
    head = stream.read(65536)
    encoding = "utf-8-sig"
    try:
        codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=False)
    except UnicodeDecodeError:
        encoding = "gb18030"
    stream.seek(0)
    text = io.TextIOWrapper(stream, encoding=encoding, newline="")  # type: ignore[type-var]
    try:
        yield from csv.reader(text)
    finally:
        with contextlib.suppress(ValueError):  # the upload may be closed already
            text.detach()  # leave the caller's stream open


def _xlsx_rows(stream: IO[bytes]) -> Iterator[list[Any]]:
    import openpyxl

    book = openpyxl.load_workbook(stream, read_only=True, data_only=True)
    try:
        sheet = book.worksheets[0]
        for row in sheet.iter_rows(values_only=True):
            yield list(row)
    finally:
        book.close()


def _rows_of(filename: str, stream: IO[bytes]) -> Iterator[list[Any]]:
    lower = filename.lower()
    if lower.endswith(".xlsx"):
        return _xlsx_rows(stream)
    if lower.endswith((".csv", ".txt")):
        return _csv_rows(stream)
    raise invalid(
        "exchange.bad_file_type",
        "只支持 CSV 或 Excel（.xlsx）文件",
        "Only CSV or Excel (.xlsx) files are supported",
        "file",
    )


def _check_size(stream: IO[bytes], max_mb: int) -> None:
    """Refuse a file over the limit before parsing it (an upload arrives spooled to a
    temporary file, not in memory; parsing is what would cost)."""
    try:
        here = stream.tell()
        size = stream.seek(0, 2) - here
        stream.seek(here)
    except (OSError, ValueError):
        return  # not seekable: parsing reads it as a stream
    if size > max_mb * 1024 * 1024:
        raise AppError(
            "exchange.file_too_large",
            f"文件过大：{size / 1048576:.1f} MB，上限 {max_mb} MB（DATATONG_UPLOAD_MAX_MB）",
            f"File too large: {size / 1048576:.1f} MB, the limit is {max_mb} MB (DATATONG_UPLOAD_MAX_MB)",
            field="file",
            status_code=413,
        )


def load_file(
    session: Session,
    settings: Settings,
    principal: Principal,
    source_id: int,
    filename: str,
    stream: IO[bytes],
) -> DataSource:
    """Replace the content of a file source's managed table with the uploaded file, in one
    transaction: any problem (types, lengths, the key missing or repeated) and nothing is
    loaded. The first row is the header, naming each column by data item name or code."""
    source = source_to_edit(session, principal, source_id)
    if source.kind != "file":
        raise invalid("exchange.not_a_file_source", "该数据源不是文件数据源", "This is not a file data source", "file")
    _check_size(stream, settings.upload_max_mb)
    rows = _rows_of(filename, stream)
    try:
        return _load(session, principal, source, filename, rows)
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()


def _load(
    session: Session, principal: Principal, source: DataSource, filename: str, rows: Iterator[list[Any]]
) -> DataSource:
    items = {i.name: i for i in source.entry.items}
    by_code = {(i.code or "").strip().lower(): i.name for i in source.entry.items if i.code}
    cols = [_Col(f.item_name, f.column, items[f.item_name].data_type, items[f.item_name].length) for f in source.fields]
    key_col = next(c for c in cols if c.column == source.key_column)
    problems: list[dict[str, Any]] = []
    count_errors = 0

    def problem(row: int, column: str, message: str) -> None:
        nonlocal count_errors
        count_errors += 1
        if len(problems) < MAX_ERRORS:
            problems.append({"row": row, "column": column, "message": message})

    try:
        header = next(rows)
    except StopIteration:
        header = []
    except UnicodeDecodeError as exc:
        raise invalid(
            "exchange.bad_encoding", "文件编码无法识别", "The file's encoding is not recognised", "file"
        ) from exc
    positions: dict[str, int] = {}
    for i, cell in enumerate(header):
        name = str(cell).strip().lstrip("\ufeff") if cell is not None else ""
        item = name if name in items else by_code.get(name.lower())
        if item is not None and item not in positions:
            positions[item] = i
    missing = [c.item for c in cols if c.item not in positions]
    if missing:
        raise ValidationFailed(
            "exchange.file_columns_missing",
            f"文件缺少列：{'、'.join(missing)}（首行应为信息项名称或代码）",
            f"The file lacks columns: {', '.join(missing)} (the first row names data items)",
            field="file",
            details=[{"row": 1, "column": m, "message": "缺少该列 / missing"} for m in missing],
        )
    table = file_table(source)
    conn = session.connection()
    # Made anew on every load, in this transaction: the file replaces everything, and a
    # table left by an earlier mapping (other columns, other types) must not be reused.
    # The DELETE comes first because pysqlite opens its transaction at the first DML
    # statement: DDL before it would commit at once, and a failed load would lose the rows.
    if sa.inspect(conn).has_table(table.name):
        conn.execute(sa.text(f'DELETE FROM "{table.name}"'))
    table.drop(conn, checkfirst=True)
    table.create(conn)
    seen: set[Any] = set()
    batch: list[dict[str, Any]] = []
    n = 0
    try:
        for line, raw in enumerate(rows, start=2):
            if not any(v not in (None, "") for v in raw):
                continue  # blank line
            n += 1
            out: dict[str, Any] = {"_row": n}
            for c in cols:
                i = positions[c.item]
                value, why = _convert(c, raw[i] if i < len(raw) else None)
                if why:
                    problem(line, c.item, why)
                out[c.column] = value
            key = out[key_col.column]
            if key is None:
                problem(line, key_col.item, "主键不能为空 / the key is required")
            elif key in seen:
                problem(line, key_col.item, f"主键重复：{key} / duplicate key")
            else:
                seen.add(key)
            if count_errors:
                batch.clear()
                continue
            batch.append(out)
            if len(batch) >= BATCH:
                conn.execute(table.insert(), batch)
                batch = []
    except UnicodeDecodeError as exc:
        raise invalid(
            "exchange.bad_encoding", "文件编码无法识别", "The file's encoding is not recognised", "file"
        ) from exc
    except csv.Error as exc:
        raise invalid("exchange.bad_file", f"CSV 格式错误：{exc}", f"Malformed CSV: {exc}", "file") from exc
    if count_errors:
        raise ValidationFailed(
            "exchange.file_invalid",
            f"文件有 {count_errors} 处错误，未载入任何数据",
            f"The file has {count_errors} problems; nothing was loaded",
            field="file",
            details=problems,
        )
    if batch:
        conn.execute(table.insert(), batch)
    source.rows = n
    source.status = "ok"
    source.last_error = None
    session.flush()
    readers.forget(source.id)
    record(
        session,
        principal,
        "exchange.source.load",
        resource=f"source:{source.id}",
        subject_department=source.entry.provider_code,
        rows=n,
        detail={"entry": source.entry.code, "file": filename[:200]},
    )
    return source
