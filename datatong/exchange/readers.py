"""Reading a data source: one interface over a SQL table or view, a platform-managed
table (uploaded files) and an upstream HTTP JSON API.

Readers speak data item names (the catalog's language); the mapping to columns or fields
stays inside. Filters and projection are pushed into the database as SQL, never applied
by looping over rows in Python (the bulk target needs that).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol, cast

import httpx
import sqlalchemy as sa
from sqlalchemy import URL, Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    InterfaceError,
    NoSuchModuleError,
    NoSuchTableError,
    OperationalError,
)

from datatong.crypto import unseal
from datatong.errors import AppError, ValidationFailed

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from datatong.exchange.models import DataSource
    from datatong.settings import Settings

OPS = ("eq", "in", "range", "prefix")
MAX_IN = 1000


class SourceError(AppError):
    """The source cannot be read: unreachable, bad credentials, missing table or column."""

    status_code = 502

    def __init__(self, code: str, message: str, message_en: str) -> None:
        super().__init__(f"exchange.{code}", message, message_en)


@dataclass(frozen=True)
class Filter:
    """``item op value``: eq (value), in (list), range ([low, high], either may be None),
    prefix (string)."""

    item: str
    op: str
    value: Any


@dataclass
class Page:
    rows: list[dict[str, Any]]  # item name → value
    after: Any | None  # the key of the last row: pass back for the next page; None at the end


class SourceReader(Protocol):
    items: Sequence[str]  # the data items this source maps
    key_item: str  # the item whose column orders pages (unique)

    def test(self) -> None:
        """Raise SourceError when the source cannot be read as mapped."""

    def page(self, items: Sequence[str], filters: Sequence[Filter], after: Any | None, limit: int) -> Page:
        """Rows ordered by the key, after ``after``, with only ``items`` (plus the key)."""

    def lookup(self, key_item: str, keys: Sequence[str], items: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Rows whose ``key_item`` is one of ``keys``, by key (for 查询核验)."""

    def stream(self, items: Sequence[str], filters: Sequence[Filter], after: Any | None, batch: int) -> Iterator[Page]:
        """Pages of ``batch`` rows until the end (bulk export)."""


# ---------------------------------------------------------------- helpers


def _unknown_item(item: str) -> AppError:
    return ValidationFailed(
        "exchange.unknown_item",
        f"数据源未映射该信息项：{item}",
        f"The data source does not map this data item: {item}",
        field=item,
    )


def _check_filter(flt: Filter) -> None:
    if flt.op not in OPS:
        raise ValidationFailed(
            "exchange.bad_filter",
            f"不支持的筛选方式：{flt.op}（可用 eq、in、range、prefix）",
            f"Unsupported filter: {flt.op} (use eq, in, range or prefix)",
            field=flt.item,
        )
    if flt.op == "in":
        if not isinstance(flt.value, list | tuple) or not flt.value:
            raise ValidationFailed(
                "exchange.bad_filter", "in 筛选需要非空列表", "An in filter needs a non-empty list", field=flt.item
            )
        if len(flt.value) > MAX_IN:
            raise ValidationFailed(
                "exchange.bad_filter",
                f"in 筛选最多 {MAX_IN} 个值",
                f"An in filter takes at most {MAX_IN} values",
                field=flt.item,
            )
    if flt.op == "range" and (not isinstance(flt.value, list | tuple) or len(flt.value) != 2):
        raise ValidationFailed(
            "exchange.bad_filter",
            "range 筛选需要 [下限, 上限]（可为 null）",
            "A range filter needs [low, high] (either may be null)",
            field=flt.item,
        )
    if flt.op == "prefix" and (not isinstance(flt.value, str) or not flt.value):
        raise ValidationFailed(
            "exchange.bad_filter",
            "prefix 筛选需要非空字符串",
            "A prefix filter needs a non-empty string",
            field=flt.item,
        )


def _safe(text: str, password: str | None) -> str:
    """A driver's message, cut short and without the password (should a driver echo it)."""
    text = " ".join(str(text).split())[:300]
    if password:
        text = text.replace(password, "***")
    return text


def unreachable(detail: str) -> SourceError:
    return SourceError(
        "source_unreachable",
        f"无法连接数据源：{detail}",
        f"The data source cannot be reached: {detail}",
    )


def _classify(exc: Exception, password: str | None) -> SourceError:
    """Turn a driver error on connect into unreachable / bad credentials."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig)
    low = text.lower()
    args = getattr(orig, "args", ())
    code = args[0] if args and isinstance(args[0], int) else None
    sqlstate = getattr(orig, "sqlstate", None)
    if (
        code in (1044, 1045, 1698)
        or sqlstate in ("28P01", "28000")
        or "password authentication failed" in low
        or "access denied" in low
        or "no password supplied" in low
        or "authentication failed" in low
        or ('role "' in low and "does not exist" in low)
        or "not permitted to log in" in low
    ):
        return SourceError(
            "source_auth_failed",
            "数据源拒绝了登录：用户名或密码错误",
            "The data source refused the login: wrong user name or password",
        )
    return unreachable(_safe(text.splitlines()[0] if text else type(orig).__name__, password))


# ---------------------------------------------------------------- SQL


class SqlReader:
    """A table or view of a SQL database (or the platform's own table of a file source).

    ``fields`` maps item name → column. The table is reflected once, on first use."""

    def __init__(
        self,
        url: str | URL | None,
        table: str,
        key_column: str,
        fields: Mapping[str, str],
        *,
        engine: Engine | None = None,
        pool_size: int = 4,
        change_column: str | None = None,
    ) -> None:
        if engine is None:
            if url is None:
                raise ValueError("SqlReader needs a url or an engine")
            engine = sa.create_engine(url, **_engine_args(url, pool_size))
            self.owns_engine = True
        else:
            self.owns_engine = False
        self.engine = engine
        self.table_name = table
        self.key_column = key_column
        self.change_column = change_column  # checked by test(); read by change tracking
        self.fields = dict(fields)
        self.items: Sequence[str] = list(self.fields)
        keys = [item for item, col in self.fields.items() if col == key_column]
        self.key_item = keys[0] if keys else key_column
        self._table: sa.Table | None = None
        self._lock = threading.Lock()

    # -- structure

    def _password(self) -> str | None:
        return self.engine.url.password if isinstance(self.engine.url.password, str) else None

    def _reflect(self) -> sa.Table:
        if self._table is not None:
            return self._table
        with self._lock:
            if self._table is None:
                schema, _, name = self.table_name.rpartition(".")
                try:
                    self._table = sa.Table(name, sa.MetaData(), schema=schema or None, autoload_with=self.engine)
                except NoSuchTableError as exc:
                    raise SourceError(
                        "source_table_missing",
                        f"数据源中没有表或视图：{self.table_name}",
                        f"The data source has no table or view named {self.table_name}",
                    ) from exc
                except (OperationalError, InterfaceError) as exc:
                    raise _classify(exc, self._password()) from exc
                except DBAPIError as exc:
                    raise self._db_error(exc) from exc
        return self._table

    def _db_error(self, exc: DBAPIError) -> SourceError:
        low = str(exc.orig).lower()
        if "permission denied" in low or "command denied" in low or "access denied" in low:
            return SourceError(
                "source_auth_failed",
                f"数据源账号无权读取表：{self.table_name}",
                f"The data source account may not read {self.table_name}",
            )
        if isinstance(exc, OperationalError | InterfaceError):
            return _classify(exc, self._password())
        return SourceError(
            "source_failed",
            f"读取数据源出错：{_safe(str(exc.orig).splitlines()[0], self._password())}",
            f"Reading the data source failed: {_safe(str(exc.orig).splitlines()[0], self._password())}",
        )

    def column(self, item: str) -> sa.ColumnElement[Any]:
        if item not in self.fields:
            raise _unknown_item(item)
        table = self._reflect()
        name = self.fields[item]
        if name not in table.c:
            raise SourceError(
                "source_column_missing",
                f"数据源表 {self.table_name} 中没有列：{name}（信息项 {item}）",
                f"The table {self.table_name} of the data source has no column {name} (data item {item})",
            )
        return table.c[name]

    def _key(self) -> sa.ColumnElement[Any]:
        table = self._reflect()
        if self.key_column not in table.c:
            raise SourceError(
                "source_column_missing",
                f"数据源表 {self.table_name} 中没有列：{self.key_column}（主键列）",
                f"The table {self.table_name} of the data source has no column {self.key_column} (the key)",
            )
        return table.c[self.key_column]

    def test(self) -> None:
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except (OperationalError, InterfaceError) as exc:
            raise _classify(exc, self._password()) from exc
        except DBAPIError as exc:
            raise self._db_error(exc) from exc
        self._table = None  # re-reflect: a test is asked for after the table changed
        self._key()
        for item in self.items:
            self.column(item)
        if self.change_column and self.change_column not in self._reflect().c:
            raise SourceError(
                "source_column_missing",
                f"数据源表 {self.table_name} 中没有列：{self.change_column}（变更跟踪列）",
                f"The table {self.table_name} of the data source has no column {self.change_column} (change tracking)",
            )
        # The account must be allowed to read (a role without SELECT fails here).
        self._run(sa.select(self._key()).limit(1), lambda rows: list(rows))

    # -- reading

    def _coerce(self, col: sa.ColumnElement[Any], value: Any) -> Any:
        try:
            py = col.type.python_type
        except NotImplementedError:
            return value
        if value is None or isinstance(value, py):
            return value
        try:
            if py is int and not isinstance(value, bool):
                return int(value)
            if py is Decimal:
                return Decimal(str(value))
            if py is float:
                return float(value)
            if py is date and isinstance(value, str):
                return date.fromisoformat(value[:10])
            if py is datetime and isinstance(value, str):
                return datetime.fromisoformat(value)
            if py is str:
                return str(value)
        except (ValueError, ArithmeticError) as exc:
            raise ValidationFailed(
                "exchange.bad_value",
                f"值的类型不符：{value!r}",
                f"The value does not fit the column type: {value!r}",
            ) from exc
        return value

    def where(self, filters: Sequence[Filter]) -> list[sa.ColumnElement[bool]]:
        clauses: list[sa.ColumnElement[bool]] = []
        for flt in filters:
            _check_filter(flt)
            col = self.column(flt.item)
            if flt.op == "eq":
                clauses.append(col == self._coerce(col, flt.value))
            elif flt.op == "in":
                clauses.append(col.in_([self._coerce(col, v) for v in flt.value]))
            elif flt.op == "range":
                low, high = flt.value
                if low is not None:
                    clauses.append(col >= self._coerce(col, low))
                if high is not None:
                    clauses.append(col <= self._coerce(col, high))
            else:  # prefix: LIKE 'value%' with % and _ in the value escaped
                clauses.append(col.startswith(str(flt.value), autoescape=True))
        return clauses

    def select(
        self, items: Sequence[str], filters: Sequence[Filter], after: Any | None
    ) -> tuple[sa.Select[Any], list[str]]:
        """The statement of a page (without LIMIT): the key column labelled ``_key``, then
        the key item and ``items`` (rows carry the key item, as the protocol says)."""
        key = self._key()
        lead = [self.key_item] if self.key_item in self.fields else []
        names = list(dict.fromkeys([*lead, *items]))
        cols = [self.column(item).label(f"c{i}") for i, item in enumerate(names)]
        stmt = sa.select(key.label("_key"), *cols).where(*self.where(filters))
        if after is not None:
            stmt = stmt.where(key > self._coerce(key, after))
        return stmt.order_by(key), names

    def _run(self, stmt: Any, consume: Any) -> Any:
        try:
            with self.engine.connect() as conn:
                return consume(conn.execute(stmt))
        except (OperationalError, InterfaceError) as exc:
            raise _classify(exc, self._password()) from exc
        except DBAPIError as exc:
            raise self._db_error(exc) from exc

    @staticmethod
    def _rows(result: Any, names: list[str]) -> list[tuple[Any, dict[str, Any]]]:
        out = []
        for row in result:
            out.append((row[0], {name: row[i + 1] for i, name in enumerate(names)}))
        return out

    def page(self, items: Sequence[str], filters: Sequence[Filter], after: Any | None, limit: int) -> Page:
        stmt, names = self.select(items, filters, after)
        got = self._run(stmt.limit(limit), lambda res: self._rows(res, names))
        rows = [row for _, row in got]
        last = got[-1][0] if got and len(got) >= limit else None
        return Page(rows, last)

    def lookup(self, key_item: str, keys: Sequence[str], items: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not keys:
            return {}
        if len(keys) > MAX_IN:
            raise ValidationFailed(
                "exchange.bad_filter", f"一次最多 {MAX_IN} 个值", f"At most {MAX_IN} values at once", field=key_item
            )
        col = self.column(key_item)
        names = list(dict.fromkeys([key_item, *items]))
        cols = [self.column(item).label(f"c{i}") for i, item in enumerate(names)]
        stmt = sa.select(col.label("_key"), *cols).where(col.in_([self._coerce(col, k) for k in keys]))
        got = self._run(stmt, lambda res: self._rows(res, names))
        return {str(key): row for key, row in got}

    def stream(self, items: Sequence[str], filters: Sequence[Filter], after: Any | None, batch: int) -> Iterator[Page]:
        """One ordered query read with a server-side cursor, ``batch`` rows at a time."""
        stmt, names = self.select(items, filters, after)
        try:
            with self.engine.connect() as conn:
                result = conn.execution_options(stream_results=True, yield_per=batch).execute(stmt)
                for part in result.partitions(batch):
                    got = self._rows(part, names)
                    yield Page([row for _, row in got], got[-1][0] if got else None)
        except (OperationalError, InterfaceError) as exc:
            raise _classify(exc, self._password()) from exc
        except DBAPIError as exc:
            raise self._db_error(exc) from exc

    def _change_columns(self) -> tuple[sa.ColumnElement[Any], sa.ColumnElement[Any]]:
        if not self.change_column:
            raise SourceError("source_no_change_column", "数据源未配置变更跟踪列", "The source tracks no changes")
        return self._reflect().c[self.change_column], self._key()

    def newest_change(self) -> tuple[Any, Any] | None:
        """The newest ``(change value, key)``: where a new capture starts (a subscription
        receives changes from now on, not the table's history); None for an empty table."""
        change, key = self._change_columns()
        stmt = sa.select(change, key).order_by(change.desc(), key.desc()).limit(1)
        got = self._run(stmt, lambda res: [tuple(r) for r in res])
        return (got[0][0], got[0][1]) if got else None

    def changes(self, after: tuple[Any, Any] | None, limit: int) -> list[tuple[Any, Any, dict[str, Any]]]:
        """Change tracking: rows after ``(change value, key)`` (all rows for None) in that
        order, as ``(change value, key, row of every item)``."""
        change, key = self._change_columns()
        names = list(self.items)
        cols = [self.column(item).label(f"c{i}") for i, item in enumerate(names)]
        stmt = sa.select(change.label("_change"), key.label("_key"), *cols)
        if after is not None:
            last_change, last_key = self._coerce(change, after[0]), self._coerce(key, after[1])
            stmt = stmt.where(sa.or_(change > last_change, sa.and_(change == last_change, key > last_key)))
        stmt = stmt.order_by(change, key).limit(limit)

        def consume(res: Any) -> list[tuple[Any, Any, dict[str, Any]]]:
            return [(r[0], r[1], {n: r[i + 2] for i, n in enumerate(names)}) for r in res]

        return list(self._run(stmt, consume))

    def dispose(self) -> None:
        if self.owns_engine:
            self.engine.dispose()


def _engine_args(url: str | URL, pool_size: int) -> dict[str, Any]:
    """A small pool that checks connections before use, and a short connect timeout
    (a test of the connection must not hang on an unreachable server)."""
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return {"connect_args": {"check_same_thread": False}}
    args: dict[str, Any] = {"pool_size": pool_size, "max_overflow": 2, "pool_pre_ping": True, "pool_recycle": 1800}
    if backend in ("postgresql", "mysql", "mariadb"):
        args["connect_args"] = {"connect_timeout": 5}
    return args


# ---------------------------------------------------------------- HTTP


def _dig(record: Any, path: str) -> tuple[bool, Any]:
    """The value at a dotted ``path`` of a JSON object, and whether it is there."""
    here = record
    for part in path.split(".") if path else []:
        if isinstance(here, dict) and part in here:
            here = here[part]
        elif isinstance(here, list) and part.isdigit() and int(part) < len(here):
            here = here[int(part)]
        else:
            return False, None
    return True, here


class HttpReader:
    """An upstream HTTP JSON API answering GET ``url?param=value&after=…&limit=…``.

    options: ``records`` (dotted path to the list in the answer, "" = the answer itself),
    ``params`` ({item: query parameter} for eq filters), ``key_param`` (the parameter
    that selects by key, for lookups), ``after_param``/``limit_param`` (default
    ``after``/``limit``), ``headers``. ``token`` (sealed at rest) is sent as a Bearer token.
    Only eq filters on mapped parameters are pushed upstream; others are refused."""

    def __init__(
        self,
        url: str,
        key_column: str,
        fields: Mapping[str, str],
        options: Mapping[str, Any] | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        outbound_allow: Sequence[str] = (),
    ) -> None:
        self.url = url
        self.outbound_allow = tuple(outbound_allow)
        self.key_column = key_column
        self.fields = dict(fields)
        self.items: Sequence[str] = list(self.fields)
        keys = [item for item, col in self.fields.items() if col == key_column]
        self.key_item = keys[0] if keys else key_column
        opts = dict(options or {})
        self.records_path = str(opts.get("records", ""))
        self.params: dict[str, str] = dict(opts.get("params") or {})
        self.key_param = str(opts.get("key_param") or self.params.get(self.key_item) or key_column)
        self.after_param = str(opts.get("after_param") or "after")
        self.limit_param = str(opts.get("limit_param") or "limit")
        headers = {str(k): str(v) for k, v in (opts.get("headers") or {}).items()}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._token = token
        self.client = httpx.Client(timeout=timeout, headers=headers, follow_redirects=False)

    def _get(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        from datatong.exchange import netguard

        refused = netguard.why_not(self.url, self.outbound_allow)  # again: names may resolve elsewhere now
        if refused:
            raise SourceError(
                "source_forbidden_address", f"不允许访问该地址：{refused}", f"Address not allowed: {refused}"
            )
        try:
            resp = self.client.get(self.url, params=params)
        except httpx.TimeoutException as exc:
            raise unreachable(f"超时 timeout ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise unreachable(_safe(str(exc) or type(exc).__name__, self._token)) from exc
        if resp.status_code in (401, 403):
            raise SourceError(
                "source_auth_failed",
                f"上游接口拒绝了访问（HTTP {resp.status_code}）",
                f"The upstream API refused access (HTTP {resp.status_code})",
            )
        if resp.status_code >= 400:
            raise SourceError(
                "source_http_error",
                f"上游接口返回错误：HTTP {resp.status_code}",
                f"The upstream API answered with an error: HTTP {resp.status_code}",
            )
        try:
            body = resp.json()
        except ValueError as exc:
            raise SourceError(
                "source_bad_response", "上游接口返回的不是 JSON", "The upstream API did not answer with JSON"
            ) from exc
        found, records = _dig(body, self.records_path)
        if not found or not isinstance(records, list):
            raise SourceError(
                "source_bad_response",
                f"上游接口的应答中没有记录列表：{self.records_path or '(根)'}",
                f"The upstream API's answer has no list of records at {self.records_path or '(root)'}",
            )
        return [r for r in records if isinstance(r, dict)]

    def _row(self, record: dict[str, Any], items: Sequence[str]) -> dict[str, Any]:
        return {item: _dig(record, self.fields[item])[1] for item in items}

    def _check_items(self, items: Sequence[str]) -> None:
        for item in items:
            if item not in self.fields:
                raise _unknown_item(item)

    def test(self) -> None:
        records = self._get({self.limit_param: 1})
        if records:
            for item, field in self.fields.items():
                if not _dig(records[0], field)[0]:
                    raise SourceError(
                        "source_column_missing",
                        f"上游接口的记录中没有字段：{field}（信息项 {item}）",
                        f"The upstream API's records have no field {field} (data item {item})",
                    )

    def page(self, items: Sequence[str], filters: Sequence[Filter], after: Any | None, limit: int) -> Page:
        names = list(dict.fromkeys([self.key_item, *items]))
        self._check_items(names)
        params: dict[str, Any] = {self.limit_param: limit}
        for flt in filters:
            _check_filter(flt)
            if flt.item not in self.fields:
                raise _unknown_item(flt.item)
            if flt.op != "eq" or flt.item not in self.params:
                raise ValidationFailed(
                    "exchange.filter_unsupported",
                    f"该数据源不支持按 {flt.item} 的 {flt.op} 筛选",
                    f"This data source cannot filter {flt.item} by {flt.op}",
                    field=flt.item,
                )
            params[self.params[flt.item]] = flt.value
        if after is not None:
            params[self.after_param] = after
        records = self._get(params)[:limit]
        rows = [self._row(r, names) for r in records]
        last = rows[-1][self.key_item] if rows and len(rows) >= limit else None
        want = set(items) | {self.key_item}
        return Page([{k: v for k, v in row.items() if k in want} for row in rows], last)

    def lookup(self, key_item: str, keys: Sequence[str], items: Sequence[str]) -> dict[str, dict[str, Any]]:
        names = list(dict.fromkeys([key_item, *items]))
        self._check_items(names)
        param = self.key_param if key_item == self.key_item else self.params.get(key_item)
        if param is None:
            raise ValidationFailed(
                "exchange.filter_unsupported",
                f"该数据源不支持按 {key_item} 查找",
                f"This data source cannot look up by {key_item}",
                field=key_item,
            )
        out: dict[str, dict[str, Any]] = {}
        for key in dict.fromkeys(str(k) for k in keys):
            for record in self._get({param: key}):
                row = self._row(record, names)
                if str(row[key_item]) == key:
                    out[key] = row
                    break
        return out

    def stream(self, items: Sequence[str], filters: Sequence[Filter], after: Any | None, batch: int) -> Iterator[Page]:
        while True:
            page = self.page(items, filters, after, batch)
            if page.rows:
                yield page
            if page.after is None:
                return
            after = page.after

    def dispose(self) -> None:
        self.client.close()


# ---------------------------------------------------------------- per source

_CACHE: dict[int, tuple[tuple[Any, ...], SqlReader | HttpReader]] = {}
_CACHE_LOCK = threading.Lock()


def secret_aad(source_id: int) -> str:
    return f"exchange_source:{source_id}:secret"


def file_table_name(source_id: int) -> str:
    return f"exchange_file_{source_id}"


def source_url(source: DataSource, settings: Settings) -> URL:
    """The stored URL with the unsealed password put back (never logged or shown)."""
    url = make_url(source.url or "")
    if source.secret_sealed:
        url = url.set(password=unseal(source.secret_sealed, aad=secret_aad(source.id), settings=settings))
    return url


def build_reader(session: Session, settings: Settings, source: DataSource) -> SqlReader | HttpReader:
    fields = {f.item_name: f.column for f in source.fields}
    if source.kind == "file":
        return SqlReader(
            None, file_table_name(source.id), source.key_column, fields, engine=cast(Engine, session.get_bind())
        )
    if source.kind == "http":
        token = (
            unseal(source.secret_sealed, aad=secret_aad(source.id), settings=settings) if source.secret_sealed else None
        )
        options = json.loads(source.options) if source.options else {}
        return HttpReader(
            source.url or "", source.key_column, fields, options, token, outbound_allow=settings.outbound_allow
        )
    try:
        url = source_url(source, settings)
    except ArgumentError as exc:
        raise unreachable("URL 无效 invalid URL") from exc
    try:
        return SqlReader(url, source.table_name or "", source.key_column, fields, change_column=source.change_column)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise unreachable(f"不支持的数据库驱动 unsupported driver: {url.drivername}") from exc


def reader_for(session: Session, settings: Settings, source: DataSource) -> SourceReader:
    """The reader of ``source``, cached per source until the source changes
    (one engine, one connection pool and one reflected table per source)."""
    bind = session.get_bind()
    assert isinstance(bind, Engine)
    stamp = (source.kind, source.updated_at, source.url, source.table_name, str(bind.url), id(bind))
    with _CACHE_LOCK:
        hit = _CACHE.get(source.id)
        if hit is not None and hit[0] == stamp:
            return hit[1]
    reader = build_reader(session, settings, source)
    with _CACHE_LOCK:
        old = _CACHE.pop(source.id, None)
        _CACHE[source.id] = (stamp, reader)
    if old is not None:
        old[1].dispose()
    return reader


def forget(source_id: int) -> None:
    """Drop the cached reader of a source (after a change or deletion)."""
    with _CACHE_LOCK:
        old = _CACHE.pop(source_id, None)
    if old is not None:
        old[1].dispose()
