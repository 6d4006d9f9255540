"""The catalog as Excel (xlsx) and CSV: the 目录编制 template, import with a
row-by-row error report, and export in the same layout (so an export re-imports).

This module only reads and writes files. Every 编目 rule stays in rules.py and
service.py; their errors are mapped back here to the sheet, row and column the
value came from, so an officer can fix the spreadsheet they filled in.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, cast

from openpyxl import Workbook, load_workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.datavalidation import DataValidation
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from datatong.catalog import bulk, finder, service, vocab
from datatong.catalog.models import CatalogEntry, DataItem
from datatong.catalog.rules import RuleError
from datatong.catalog.schemas import EntryIn, ItemIn
from datatong.errors import AppError, ValidationFailed, invalid
from datatong.orgs.models import User
from datatong.orgs.service import Principal, principal_for

if TYPE_CHECKING:
    from rich.console import Console

    from datatong.settings import Settings

MAX_BYTES = 50 * 1024 * 1024
# An xlsx is a zip: a small file can inflate enormously (zip bomb), so the
# uncompressed size is bounded as well.
MAX_UNZIPPED = 512 * 1024 * 1024
MAX_DETAILS = 1000
# A write-only worksheet. Typed Any: openpyxl's stubs omit the column_dimensions
# and data_validations it has at run time.
Sheet = Any
XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
ENTRY_SHEET, ITEM_SHEET, HELP_SHEET = "信息资源", "信息项", "填写说明"


# ---------------------------------------------------------------- layout


@dataclass(frozen=True)
class Column:
    header: str
    field: str
    kind: str = "text"  # text, key, list, bool, date, int
    table: dict[str, str] | None = None
    required: bool = False
    note: str = ""
    width: int = 16
    as_text: bool = False  # codes: formatted as text so Excel keeps leading zeros
    aliases: tuple[str, ...] = ()


def _list(header: str, name: str, table: dict[str, str], **kw: Any) -> Column:
    return Column(header, name, "list", table, **kw)


ENTRY_COLUMNS = [
    Column(
        "序号",
        "key",
        "key",
        required=True,
        width=8,
        as_text=True,
        note="每行一个信息资源；“信息项”表用“资源序号”与本列关联",
    ),
    Column("信息资源名称", "name", required=True, width=28),
    Column(
        "信息资源分类代码",
        "class_code",
        required=True,
        as_text=True,
        note="类(1位)+项(2位)[+目(3位)+细目]，如 101 表示 基础信息资源—人口；须到“项”一级",
    ),
    Column(
        "提供方代码",
        "provider_code",
        as_text=True,
        note="留空为导入人所在部门；仅平台管理员可代其他部门导入",
    ),
    Column("提供方内部部门", "provider_unit"),
    Column("摘要", "summary", required=True, width=40),
    Column("关键字", "keywords", note="多个关键字用逗号分隔"),
    _list("信息资源格式分类", "format_category", vocab.FORMAT_CATEGORIES, required=True),
    Column("信息资源格式类型", "format_type", note="如 xlsx、csv、PostgreSQL table、REST"),
    _list("共享类型", "share_type", vocab.SHARE_TYPES, required=True),
    Column("共享条件", "share_condition", width=30, note="有条件共享时必填"),
    Column(
        "不予共享依据",
        "no_share_basis",
        width=30,
        note="不予共享时必填：法律、行政法规或党中央、国务院政策依据",
    ),
    _list("共享方式", "share_method", vocab.SHARE_METHODS, note="除不予共享外必填，一般为共享平台"),
    _list("共享方式子类", "share_subtype", vocab.SHARE_SUBTYPES),
    Column("是否向社会开放", "is_open", "bool", note="是/否，留空为否"),
    Column("开放条件", "open_condition", width=24),
    _list("更新周期", "update_cycle", vocab.UPDATE_CYCLES, required=True),
    Column("发布日期", "release_date", "date", note="如 2024-01-31，可留空"),
    Column("关联资源代码", "related_codes", as_text=True, note="多个代码用逗号分隔"),
    Column("来源信息系统", "source_system"),
    Column("在线资源链接", "online_url", width=28),
    Column("服务信息", "service_info", width=24),
    Column("元数据维护方", "metadata_maintainer"),
    Column(
        "信息资源代码(可选)",
        "code",
        width=26,
        as_text=True,
        note="已有代码（如 GB/T 21063.5 标识符），仅平台管理员可指定；留空则自动生成",
    ),
]
BASIS_COLUMN = next(c for c in ENTRY_COLUMNS if c.field == "no_share_basis")
STATUS_COLUMN = Column("状态", "status", note="仅导出时填写；导入时忽略，导入的信息资源均为草稿")
ITEM_COLUMNS = [
    Column(
        "资源序号",
        "key",
        "key",
        required=True,
        width=10,
        as_text=True,
        aliases=("序号",),
        note="所属信息资源在“信息资源”表中的序号",
    ),
    Column("信息项名称", "name", required=True, width=24),
    Column("信息项代码", "code", as_text=True),
    _list("数据类型", "data_type", vocab.DATA_TYPES, required=True, note="可填中文名称或字母代码"),
    Column(
        "长度",
        "length",
        "int",
        width=8,
        note="字符型、数值型、货币型、双精度型、浮点型必填；日期型等可留空",
    ),
    Column("描述", "description", width=30),
    _list("敏感级别", "sensitivity", vocab.SENSITIVITIES, note="留空为 内部"),
    Column("是否权威来源", "is_authoritative", "bool", note="本部门是否为该数据的权威来源，是/否"),
]
# CSV: the entry's 序号 links the rows and may be left out (rows then group by name).
FLAT_ENTRY_COLUMNS = [replace(ENTRY_COLUMNS[0], required=False), *ENTRY_COLUMNS[1:]]
FLAT_ITEM_COLUMNS = ITEM_COLUMNS[1:]
KEY_HEADER = ENTRY_COLUMNS[0].header


def _norm_header(value: Any) -> str:
    """Header text as compared: no spaces, no required/optional marks."""
    text = re.sub(r"\s+", "", str(value or ""))
    return re.sub(r"[*＊]|[(（](可选|必填)[)）]", "", text)


KNOWN_HEADERS = {_norm_header(c.header) for c in ENTRY_COLUMNS + ITEM_COLUMNS} | {"序号"}


# ---------------------------------------------------------------- errors


@dataclass
class RowError:
    sheet: str
    row: int
    column: str
    code: str
    message: str
    message_en: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "sheet": self.sheet,
            "row": self.row,
            "column": self.column,
            "code": self.code,
            "message": self.message,
            "message_en": self.message_en,
        }


@dataclass
class ImportReport:
    created: int
    codes: list[str]


Cell = tuple[str, int, str]  # (sheet, row, column header)


class _Report:
    """Collects errors, one per cell: a rule error on a cell that already has a
    type error is dropped, since it would only restate the same problem."""

    def __init__(self) -> None:
        self.errors: list[RowError] = []
        self.flagged: set[Cell] = set()
        self.sheets: list[str] = []
        self.columns: dict[str, list[str]] = {}

    def cell(self, at: Cell, code: str, zh: str, en: str) -> None:
        if at not in self.flagged:  # one problem per cell: the first says it
            self.flagged.add(at)
            self._add(at, code, zh, en)

    def rule(self, at: Cell, code: str, zh: str, en: str) -> None:
        if at not in self.flagged:
            self._add(at, code, zh, en)

    def _add(self, at: Cell, code: str, zh: str, en: str) -> None:
        self.errors.append(RowError(*at, code, zh, en))

    @staticmethod
    def _rank(values: list[str], value: str) -> int:
        return values.index(value) if value in values else len(values)

    def sorted(self) -> list[RowError]:
        """In file order: sheet, row, then column from left to right."""

        def key(e: RowError) -> tuple[int, int, int]:
            cols = self.columns.get(e.sheet, [])
            return self._rank(self.sheets, e.sheet), e.row, self._rank(cols, e.column)

        return sorted(self.errors, key=key)


def _header_error(missing: list[Cell]) -> ValidationFailed:
    """One error for every missing column (of every sheet), so one fix suffices."""
    by_sheet: dict[str, list[str]] = {}
    for sheet, _, column in missing:
        by_sheet.setdefault(sheet, []).append(column)
    zh = "；".join(f"“{sheet}”表缺少列：{'、'.join(cols)}" for sheet, cols in by_sheet.items())
    en = "; ".join(f"sheet '{sheet}' lacks {', '.join(cols)}" for sheet, cols in by_sheet.items())
    details = [
        RowError(
            sheet,
            row,
            column,
            "import.header_invalid",
            f"缺少列“{column}”",
            f"Missing column {column}",
        ).as_dict()
        for sheet, row, column in missing
    ]
    return ValidationFailed(
        "import.header_invalid",
        f"表头不正确，{zh}。请使用平台提供的目录编制模板",
        f"Wrong header: {en}",
        field="file",
        details=details,
    )


def _unreadable(what: str = "文件") -> ValidationFailed:
    return ValidationFailed(
        "file.unreadable",
        f"无法读取该{what}，文件可能已损坏或格式不对",
        "The file cannot be read; it may be damaged",
        field="file",
    )


# ---------------------------------------------------------------- cell values


def _text(value: Any) -> str | None:
    """A cell as text (None when blank). Excel may store a code such as 101 as the
    number 101.0; it reads back as "101"."""
    if value is None:
        return None
    # Plain text is the common case, kept fast for big files.
    text = value.strip() if type(value) is str else _nonstr_text(value)
    # Undo the quote our CSV export puts before formula-like text (see _safe).
    if len(text) > 1 and text[0] == "'" and text[1] in "=+-@":
        text = text[1:]
    return text or None


def _nonstr_text(value: Any) -> str:
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, datetime):
        value = value.date() if value.time() == datetime.min.time() else value
    return str(value).strip()


TRUE_WORDS = {"是", "true", "yes", "y", "1", "√", "t"}
FALSE_WORDS = {"否", "false", "no", "n", "0", "×", "f"}
DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%Y%m%d", "%Y年%m月%d日")


def _convert(raw: Any, col: Column, at: Cell, report: _Report) -> Any:
    """The value of one cell for EntryIn/ItemIn; problems are reported at the cell."""
    text = _text(raw)
    if text is None:
        if col.required:
            report.cell(at, "import.required", f"请填写{at[2]}", f"{col.field} is required")
            return ""
        return None
    if col.kind == "list":
        return _from_list(text, col, at, report)
    if col.kind == "bool":
        return raw if isinstance(raw, bool) else _to_bool(text, at, report)
    if col.kind == "date":
        return _to_date(raw, text, at, report)
    if col.kind == "int":
        return _to_int(raw, text, at, report)
    return text


def _from_list(text: str, col: Column, at: Cell, report: _Report) -> str:
    assert col.table is not None
    code = vocab.from_label(col.table, text)
    if code is None and col.field == "data_type":
        code = vocab.from_label(col.table, text.upper())
    if code is None:
        allowed = "、".join(col.table.values())
        report.cell(
            at,
            "import.value_unknown",
            f"{at[2]}“{text}”不在可选值中，可选：{allowed}",
            f"'{text}' is not an allowed value of {col.field}",
        )
        return text  # kept so the entry's other rules are still checked
    return code


def _to_bool(text: str, at: Cell, report: _Report) -> bool:
    word = text.lower()
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    report.cell(at, "import.bool_invalid", f"{at[2]}须填“是”或“否”，“{text}”无效", f"'{text}' is not yes/no")
    return False


def _to_date(raw: Any, text: str, at: Cell, report: _Report) -> date | None:
    if isinstance(raw, datetime):
        return raw.date()
    if isinstance(raw, date):
        return raw
    for fmt in DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    report.cell(
        at,
        "import.date_invalid",
        f"{at[2]}“{text}”不是有效日期，请写成 2024-01-31 的格式",
        f"'{text}' is not a date (use 2024-01-31)",
    )
    return None


def _to_int(raw: Any, text: str, at: Cell, report: _Report) -> int | None:
    value: int | None = None
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, float) and raw.is_integer():
        value = int(raw)
    elif re.fullmatch(r"\d+(\.0*)?", text):
        value = int(float(text))
    if value is None or value < 1:
        report.cell(
            at,
            "import.integer_invalid",
            f"{at[2]}须为正整数，“{text}”无效",
            f"'{text}' is not a positive whole number",
        )
        return None
    return value


# ---------------------------------------------------------------- tables


@dataclass
class _Table:
    sheet: str
    header_row: int
    headers: list[str]  # normalised
    rows: list[tuple[int, tuple[Any, ...]]]  # (1-based row number, cells), blank rows left out


def _table(sheet: str, rows: Iterable[tuple[Any, ...]]) -> _Table:
    """The header is the row, among the first ten, naming most known columns, so a
    title line above the header does no harm."""
    all_rows = list(rows)
    best, best_hits = 0, 0
    for i, row in enumerate(all_rows[:10]):
        hits = sum(_norm_header(c) in KNOWN_HEADERS for c in row)
        if hits > best_hits:
            best, best_hits = i, hits
    headers = [_norm_header(c) for c in all_rows[best]] if all_rows else []
    data = [(i + 1, tuple(r)) for i, r in enumerate(all_rows) if i > best and any(_text(c) is not None for c in r)]
    return _Table(sheet, best + 1, headers, data)


@dataclass
class _Layout:
    """Where the columns of one kind (entry or item) are in a table."""

    table: _Table
    index: dict[str, int]  # field -> position, for the columns the file has
    headers: dict[str, str]  # field -> header as in the file (else the template's)
    columns: list[Column]
    present: list[tuple[Column, int]]

    def raw(self, cells: tuple[Any, ...], name: str) -> Any:
        i = self.index.get(name)
        return cells[i] if i is not None and i < len(cells) else None

    def header(self, name: str) -> str:
        return self.headers.get(name, name)

    def parse(self, row: int, cells: tuple[Any, ...], report: _Report) -> dict[str, Any]:
        """The row's values; a column the file lacks is left out (its default applies)."""
        sheet, n = self.table.sheet, len(cells)
        return {
            c.field: _convert(cells[i] if i < n else None, c, (sheet, row, self.headers[c.field]), report)
            for c, i in self.present
        }


def _layout(table: _Table, columns: list[Column]) -> _Layout:
    index: dict[str, int] = {}
    headers = {c.field: c.header for c in columns}
    for col in columns:
        names = {_norm_header(col.header), *col.aliases}
        pos = next((i for i, h in enumerate(table.headers) if h in names), None)
        if pos is not None:
            index[col.field], headers[col.field] = pos, table.headers[pos]
    present = [(c, index[c.field]) for c in columns if c.field in index]
    return _Layout(table, index, headers, columns, present)


def _layouts(*specs: tuple[_Table, list[Column]]) -> list[_Layout]:
    """Where the columns are; any required column missing is a header error."""
    layouts = [_layout(table, columns) for table, columns in specs]
    missing = [
        (lay.table.sheet, lay.table.header_row, c.header)
        for lay in layouts
        for c in lay.columns
        if c.required and c.field not in lay.index
    ]
    if missing:
        raise _header_error(missing)
    return layouts


# ---------------------------------------------------------------- reading files


def too_large() -> AppError:
    mb = MAX_BYTES // 1024 // 1024
    return AppError(
        "file.too_large",
        f"文件超过 {mb} MB 的上限，请分批导入",
        f"The file exceeds {mb} MB",
        field="file",
        status_code=413,
    )


def _file_kind(data: bytes, filename: str) -> str:
    if len(data) > MAX_BYTES:
        raise too_large()
    suffix = PurePath(filename or "").suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        return "xlsx"
    if suffix == ".csv":
        return "csv"
    raise AppError(
        "file.type_unsupported",
        "只支持 .xlsx 或 .csv 文件（.xls 请在 Excel 中另存为 .xlsx）",
        "Only .xlsx and .csv files are supported",
        field="file",
        status_code=415,
    )


def _xlsx_tables(data: bytes) -> tuple[_Table, _Table | None]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            if sum(i.file_size for i in z.infolist()) > MAX_UNZIPPED:
                raise _unreadable("Excel 文件（解压后过大）")
        wb = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except AppError:
        raise
    except Exception as exc:  # openpyxl raises many kinds of error on damaged files
        raise _unreadable("Excel 文件") from exc
    try:
        names = wb.sheetnames
        first = ENTRY_SHEET if ENTRY_SHEET in names else names[0]
        entries = _table(first, wb[first].iter_rows(values_only=True))
        items = _table(ITEM_SHEET, wb[ITEM_SHEET].iter_rows(values_only=True)) if ITEM_SHEET in names else None
    except AppError:
        raise
    except Exception as exc:  # a sheet can be damaged even when the zip opens
        raise _unreadable("Excel 文件") from exc
    finally:
        wb.close()
    return entries, items


def _decode(data: bytes) -> str:
    """UTF-8 (with or without BOM) first; else GB18030, a superset of the GBK
    that Excel in China saves by default."""
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise _unreadable("CSV 文件（编码无法识别）")


def _csv_table(data: bytes, filename: str) -> _Table:
    text = _decode(data)
    first = text.split("\n", 1)[0]
    delimiter = "\t" if "\t" in first and "," not in first else ","
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error as exc:
        raise _unreadable("CSV 文件") from exc
    return _table(PurePath(filename).name or "CSV", (tuple(r) for r in rows))


# ---------------------------------------------------------------- entries from tables


@dataclass
class _Draft:
    """An entry being read, with where each value came from (to place rule errors)."""

    entry: _Layout
    row: int
    fields: dict[str, Any]
    item: _Layout
    items_column: str
    items: list[dict[str, Any]] = field(default_factory=list)
    item_rows: list[int] = field(default_factory=list)

    def at(self, name: str) -> Cell:
        return self.entry.table.sheet, self.row, self.entry.header(name)

    def items_at(self) -> Cell:
        """Where "this entry has no / too many items" is reported."""
        return self.entry.table.sheet, self.row, self.items_column

    def item_at(self, index: int, name: str) -> Cell:
        if index >= len(self.item_rows):
            return self.at("name")
        return self.item.table.sheet, self.item_rows[index], self.item.header(name)


def _read_two_sheets(entries: _Table, items: _Table, report: _Report) -> list[_Draft]:
    """Template layout: one row per entry in 信息资源, one per item in 信息项."""
    e, i = _layouts((entries, ENTRY_COLUMNS), (items, ITEM_COLUMNS))
    drafts: list[_Draft] = []
    by_key: dict[str, _Draft] = {}
    for row, cells in entries.rows:
        draft = _Draft(e, row, e.parse(row, cells, report), i, e.header("key"))
        drafts.append(draft)
        key = draft.fields.pop("key", None)
        if key in by_key:
            report.cell(
                draft.at("key"),
                "import.key_duplicate",
                f"序号 {key} 重复（第 {by_key[key].row} 行已使用）",
                f"Row key {key} appears twice",
            )
        elif key:
            by_key[key] = draft
    for row, cells in items.rows:
        item = i.parse(row, cells, report)
        key = item.pop("key", None)
        owner = by_key.get(key)
        if owner is None and key:
            report.cell(
                (items.sheet, row, i.header("key")),
                "import.key_unknown",
                f"资源序号 {key} 在“{entries.sheet}”表中不存在",
                f"No entry has the row key {key}",
            )
        if owner is not None:
            owner.items.append(item)
            owner.item_rows.append(row)
    return drafts


def _read_flat(table: _Table, report: _Report) -> list[_Draft]:
    """CSV layout: one row per item, the entry's columns repeated on each row;
    rows with the same 序号 (or, without one, the same name) form one entry."""
    e, i = _layouts((table, FLAT_ENTRY_COLUMNS), (table, FLAT_ITEM_COLUMNS))
    groups: dict[str, tuple[_Draft, tuple[Any, ...]]] = {}
    for row, cells in table.rows:
        key = _group_key(e, row, cells)
        if key not in groups:
            draft = _Draft(e, row, e.parse(row, cells, report), i, i.header("name"))
            draft.fields.pop("key", None)
            groups[key] = (draft, cells)
        else:
            draft = groups[key][0]
            _check_repeated(draft, groups[key][1], row, cells, report)
        if any(_text(i.raw(cells, c.field)) is not None for c in FLAT_ITEM_COLUMNS):
            draft.items.append(i.parse(row, cells, report))
            draft.item_rows.append(row)
    return [d for d, _ in groups.values()]


def _group_key(e: _Layout, row: int, cells: tuple[Any, ...]) -> str:
    seq = _text(e.raw(cells, "key"))
    if seq:
        return "seq:" + seq
    name = _text(e.raw(cells, "name"))
    return "name:" + name if name else f"row:{row}"


def _check_repeated(draft: _Draft, first: tuple[Any, ...], row: int, cells: tuple[Any, ...], report: _Report) -> None:
    """A repeated entry column may be left blank, but must not say something else."""
    e = draft.entry
    for col, i in e.present:
        if col.kind == "key" or (i < len(cells) and i < len(first) and cells[i] == first[i]):
            continue  # the usual case: the value repeated as it was
        later, earlier = _text(e.raw(cells, col.field)), _text(e.raw(first, col.field))
        if later is not None and later != earlier:
            report.cell(
                (e.table.sheet, row, e.header(col.field)),
                "import.entry_inconsistent",
                f"同一信息资源的“{e.header(col.field)}”与第 {draft.row} 行不一致（“{later}” ≠ “{earlier or ''}”）",
                f"Differs from row {draft.row} of the same entry",
            )


def _build(draft: _Draft, report: _Report) -> EntryIn:
    """EntryIn from a draft. Schema limits (text too long …) are reported at their
    cell and the value dropped, so the entry's rules are still checked."""
    payload: dict[str, Any] = {k: v for k, v in draft.fields.items() if v is not None}
    payload["items"] = [{k: v for k, v in it.items() if v is not None} for it in draft.items]
    for _ in range(3):
        try:
            return EntryIn.model_validate(payload)
        except ValidationError as exc:
            for err in exc.errors():
                _schema_error(err, payload, draft, report)
    raise AssertionError("EntryIn still invalid after dropping the invalid values")


def _schema_error(err: Any, payload: dict[str, Any], draft: _Draft, report: _Report) -> None:
    loc, ctx = err["loc"], err.get("ctx", {})
    if loc[0] == "items" and len(loc) == 1:
        report.rule(
            draft.items_at(),
            "import.too_many_items",
            f"一个信息资源最多 {ctx.get('max_length')} 个信息项",
            "Too many data items",
        )
        payload["items"] = payload["items"][: ctx.get("max_length", 0)]
        return
    if loc[0] == "items":
        target, at = payload["items"][loc[1]], draft.item_at(loc[1], str(loc[2]))
    else:
        target, at = payload, draft.at(str(loc[0]))
    name = str(loc[-1])
    limit = ctx.get("max_length")
    too_long = err["type"] == "string_too_long"
    zh = f"{at[2]}不能超过 {limit} 个字符" if too_long else f"{at[2]}的值不正确"
    report.cell(at, "import.value_invalid", zh, f"{name}: {err['msg']}")
    model = ItemIn if loc[0] == "items" else EntryIn
    if name not in target:
        return
    if model.model_fields[name].is_required():
        target[name] = ""  # blank: the rules then say what is missing
    else:
        del target[name]  # the default applies


def _parse(data: bytes, filename: str) -> tuple[list[EntryIn], list[_Draft], _Report]:
    report = _Report()
    if _file_kind(data, filename) == "csv":
        entries, items = _csv_table(data, filename), None
    else:
        entries, items = _xlsx_tables(data)
    # The template has two sheets; CSV (or a single sheet carrying the item
    # columns) has one row per data item.
    if items is None or "信息项名称" in entries.headers:
        items = None
        drafts = _read_flat(entries, report)
    else:
        drafts = _read_two_sheets(entries, items, report)
    if not drafts:
        raise ValidationFailed("file.empty", "文件中没有信息资源", "The file holds no entries", field="file")
    report.sheets = [entries.sheet] + ([items.sheet] if items else [])
    report.columns = {t.sheet: t.headers for t in (entries, items) if t is not None}
    return [_build(d, report) for d in drafts], drafts, report


def read_entries(data: bytes, filename: str) -> tuple[list[EntryIn], list[RowError]]:
    """Entries of an xlsx (template layout) or CSV file, and every type problem
    found, per cell. Rules are not checked here (see import_file)."""
    entries, _, report = _parse(data, filename)
    return entries, report.sorted()


# ---------------------------------------------------------------- import


ITEM_FIELD = re.compile(r"items\[(\d+)\]\.(\w+)")


def _rule_cell(err: RuleError, draft: _Draft) -> Cell:
    m = ITEM_FIELD.fullmatch(err.field)
    if m:
        return draft.item_at(int(m[1]), m[2])
    if err.field == "items":
        return draft.items_at()
    return draft.at(err.field)


def _import_failed(errors: list[RowError]) -> ValidationFailed:
    n = len(errors)
    return ValidationFailed(
        "catalog.import_invalid",
        f"导入失败：共 {n} 处错误，未导入任何数据",
        f"Import failed: {n} error(s); nothing was imported",
        field="file",
        details=[e.as_dict() for e in errors[:MAX_DETAILS]],
    )


def import_file(
    session: Session,
    principal: Principal,
    data: bytes,
    filename: str,
    progress: Callable[[int], None] | None = None,
    *,
    on_start: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import a file all or nothing: any error anywhere and nothing is written.

    ``on_start`` hears the number of entries about to be written, ``progress``
    each batch written (for a progress bar).
    """
    service.require_editor(principal)
    entries, drafts, report = _parse(data, filename)
    for errors, draft in zip(service.check_import(session, principal, entries), drafts, strict=True):
        for err in errors:
            report.rule(_rule_cell(err, draft), err.code, err.message, err.message_en)
    if report.errors:
        raise _import_failed(report.sorted())
    if on_start:
        on_start(len(entries))
    result = bulk.bulk_create(session, principal, entries, progress=progress)
    return ImportReport(created=result.created, codes=result.codes)


# ---------------------------------------------------------------- writing


def _export_header(col: Column) -> str:
    # Filled in on export, so no longer "(可选)"; both spellings import.
    return "信息资源代码" if col is ENTRY_COLUMNS[-1] else col.header


def _cell_value(col: Column, value: Any) -> Any:
    if value is None:
        return None
    if col.kind == "list" and col.table is not None:
        return vocab.label(col.table, value)
    if col.kind == "bool":
        return "是" if value else "否"
    return value


def _entry_row(entry: CatalogEntry, seq: int, viewer: Principal | None) -> list[Any]:
    values = [seq] + [_cell_value(c, getattr(entry, c.field)) for c in ENTRY_COLUMNS[1:]]
    if viewer is not None and not service.may_see_no_share_basis(viewer, entry):
        # Why a resource is not shared is for the operator and the provider only.
        values[ENTRY_COLUMNS.index(BASIS_COLUMN)] = None
    return [*values, vocab.label(vocab.STATUSES, entry.status)]


def _item_row(item: DataItem) -> list[Any]:
    return [_cell_value(c, getattr(item, c.field)) for c in FLAT_ITEM_COLUMNS]


HEADER_FONT = Font(bold=True)
HEADER_FILL = PatternFill("solid", fgColor="DDEBF7")
REQUIRED_FILL = PatternFill("solid", fgColor="FCE4D6")


def _prepare(ws: Sheet, columns: list[Column], export: bool) -> None:
    """Widths, text format for code columns, dropdowns, frozen bold header."""
    for n, col in enumerate(columns, start=1):
        letter = get_column_letter(n)
        ws.column_dimensions[letter].width = col.width
        if col.as_text:
            ws.column_dimensions[letter].number_format = "@"
        choices = _choices(col)
        if choices:
            # "warning" rather than "stop": codes (e.g. C, conditional) are accepted too.
            dv = DataValidation(
                type="list",
                formula1='"' + ",".join(choices) + '"',
                allow_blank=True,
                showErrorMessage=True,
                errorStyle="warning",
                error="请从下拉列表中选择",
                errorTitle=col.header,
            )
            dv.add(f"{letter}2:{letter}1048576")
            ws.data_validations.append(dv)
    ws.freeze_panes = "C2"  # the header and the row key + name stay in view
    header = []
    for col in columns:
        cell = WriteOnlyCell(ws, _export_header(col) if export else col.header)
        cell.font, cell.alignment = HEADER_FONT, Alignment(horizontal="center", wrap_text=True)
        cell.fill = REQUIRED_FILL if col.required else HEADER_FILL
        header.append(cell)
    ws.append(header)


def _choices(col: Column) -> list[str]:
    if col.table:
        return list(col.table.values())
    return ["是", "否"] if col.kind == "bool" else []


def _cells(ws: Sheet, values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if isinstance(v, str) and v.startswith("="):
            cell = WriteOnlyCell(ws, v)
            cell.data_type = "s"  # text that looks like a formula stays text
            out.append(cell)
        elif isinstance(v, date):
            cell = WriteOnlyCell(ws, cast(Any, v))  # the stubs forget plain dates
            cell.number_format = "yyyy-mm-dd"
            out.append(cell)
        else:
            out.append(v)
    return out


def _write_help(ws: Sheet) -> None:
    for letter, width in zip("ABCDE", (10, 20, 6, 50, 60), strict=True):
        ws.column_dimensions[letter].width = width
    title = WriteOnlyCell(ws, "政务信息资源目录编制模板 填写说明")
    title.font = Font(bold=True, size=14)
    ws.append([title])
    for line in HELP_LINES:
        ws.append([line])
    ws.append([])
    head = []
    for text in ("工作表", "列名", "必填", "填写说明", "可选值（中文名称；也可填代码）"):
        cell = WriteOnlyCell(ws, text)
        cell.font, cell.fill = HEADER_FONT, HEADER_FILL
        head.append(cell)
    ws.append(head)
    for sheet, columns in (
        (ENTRY_SHEET, [*ENTRY_COLUMNS, STATUS_COLUMN]),
        (ITEM_SHEET, ITEM_COLUMNS),
    ):
        for col in columns:
            choices = ""
            if col.table:
                choices = "、".join(f"{lab}（{code}）" for code, lab in col.table.items())
            elif col.kind == "bool":
                choices = "是、否"
            ws.append([sheet, col.header, "是" if col.required else "", col.note, choices])


HELP_LINES = [
    "1. “信息资源”表每行一个信息资源；“信息项”表每行一个信息项，"
    "用“资源序号”对应“信息资源”表的“序号”。每个信息资源至少要有一个信息项。",
    "2. 橙色表头的列为必填。带下拉框的列可填中文名称（如 有条件共享），"
    "也可填代码（如 conditional）；是/否 列填“是”或“否”。",
    "3. 有条件共享须填共享条件；不予共享须填不予共享依据；除不予共享外须选择共享方式（一般为 共享平台）。",
    "4. 导入时逐行校验，全部通过才写入；任何一处错误都会按 工作表/行/列 列出，"
    "且不导入任何数据。导入的信息资源为草稿，需提交发布审核。",
    "5. 也可导入 CSV：每行一个信息项，信息资源的各列在每行重复"
    "（同一序号，或无序号时同一名称的行属于同一信息资源），编码 UTF-8 或 GBK 均可。",
    "6. 分类代码见平台“资源分类”（GET /api/v1/catalog/classes）。",
]


def _workbook(entries: Iterable[CatalogEntry] | None, viewer: Principal | None = None) -> bytes:
    """The template (no entries) or an export: the same sheets and columns."""
    export = entries is not None
    wb = Workbook(write_only=True)
    e_ws, i_ws = wb.create_sheet(ENTRY_SHEET), wb.create_sheet(ITEM_SHEET)
    _prepare(e_ws, [*ENTRY_COLUMNS, STATUS_COLUMN] if export else ENTRY_COLUMNS, export)
    _prepare(i_ws, ITEM_COLUMNS, export)
    for seq, entry in enumerate(entries or (), start=1):
        e_ws.append(_cells(e_ws, _entry_row(entry, seq, viewer)))
        for item in entry.items:
            i_ws.append(_cells(i_ws, [seq, *_item_row(item)]))
    _write_help(wb.create_sheet(HELP_SHEET))
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def write_template() -> bytes:
    """The blank 目录编制 template (xlsx) data officers fill in."""
    return _workbook(None)


def _safe(value: Any) -> str:
    """CSV cell text; formula-like text gets a leading quote so Excel does not run
    it (CSV injection). The importer removes that quote again."""
    if value is None:
        return ""
    if isinstance(value, date):
        return value.isoformat()
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def _csv(entries: Iterable[CatalogEntry], viewer: Principal | None) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    columns = [*ENTRY_COLUMNS, STATUS_COLUMN, *FLAT_ITEM_COLUMNS]
    writer.writerow([_export_header(c) for c in columns])
    for seq, entry in enumerate(entries, start=1):
        head = _entry_row(entry, seq, viewer)
        items: list[DataItem | None] = [*entry.items] or [None]  # an entry row even without items
        for item in items:
            tail = _item_row(item) if item is not None else [None] * len(FLAT_ITEM_COLUMNS)
            writer.writerow([_safe(v) for v in head + tail])
    # UTF-8 with BOM: Excel then opens the Chinese text correctly.
    return buf.getvalue().encode("utf-8-sig")


def export_entries(entries: Iterable[CatalogEntry], fmt: str, viewer: Principal | None = None) -> bytes:
    """Entries in the template layout (with 信息资源代码 and 状态), as xlsx or CSV.

    ``viewer`` is who asked: 不予共享依据 is left blank on entries they may not see
    it of (None: every field, for trusted callers).
    """
    if fmt == "xlsx":
        return _workbook(entries, viewer)
    if fmt == "csv":
        return _csv(entries, viewer)
    raise invalid("file.type_unsupported", "导出格式须为 xlsx 或 csv", "Format must be xlsx or csv", "format")


# ---------------------------------------------------------------- command line


def _principal(session: Session, username: str) -> Principal:
    user = session.scalar(select(User).where(User.username == username.strip()))
    if user is None or not user.is_active:
        raise invalid("user.unknown", f"用户 {username} 不存在或已停用", f"No active user {username}", "as")
    return principal_for(user)


def _print_failure(console: Console, exc: AppError) -> None:
    from rich.table import Table

    console.print(f"[red]错误[/red] {exc.message}（{exc.code}）")
    rows = [d for d in exc.details if "row" in d]
    if not rows:
        for d in exc.details[:50]:
            console.print(f"  - {d.get('message', d)}")
        return
    table = Table("工作表", "行", "列", "错误")
    for d in rows[:200]:
        table.add_row(str(d["sheet"]), str(d["row"]), str(d["column"]), str(d["message"]))
    console.print(table)
    if len(rows) > 200:
        console.print(f"……另有 {len(rows) - 200} 处错误未列出")


def cli_import(settings: Settings, file: Path, as_user: str, console: Console) -> None:
    """``datatong catalog import``: all or nothing, with a progress bar; exit 2 on errors."""
    import typer
    from rich.progress import Progress

    from datatong.app import prepare_database
    from datatong.db import session_scope

    prepare_database(settings)
    try:
        with (
            session_scope(settings.database_url) as session,
            Progress(console=console, transient=True) as bar,
        ):
            principal = _principal(session, as_user)
            task = bar.add_task("正在读取并校验", total=None)
            report = import_file(
                session,
                principal,
                file.read_bytes(),
                file.name,
                progress=lambda n: bar.advance(task, n),
                on_start=lambda total: bar.update(task, description="正在导入", total=total),
            )
    except AppError as exc:
        _print_failure(console, exc)
        raise typer.Exit(2) from None
    console.print(f"[green]已导入 {report.created} 条信息资源（草稿）[/green]")


def _counted(entries: Iterable[CatalogEntry], count: list[int]) -> Iterator[CatalogEntry]:
    for entry in entries:
        count[0] += 1
        yield entry


def cli_export(settings: Settings, out: Path, q: str, as_user: str, console: Console) -> None:
    """``datatong catalog export``: the search result as .xlsx or .csv (by suffix)."""
    import typer

    from datatong.app import prepare_database
    from datatong.db import session_scope

    fmt = out.suffix.lower().lstrip(".")
    try:
        if fmt not in ("xlsx", "csv"):
            raise invalid(
                "file.type_unsupported",
                "输出文件须为 .xlsx 或 .csv",
                "The output file must be .xlsx or .csv",
                "out",
            )
        prepare_database(settings)
        count = [0]
        with session_scope(settings.database_url) as session:
            principal = _principal(session, as_user)
            params = finder.SearchParams(q=q, sort="code", facets=False)
            found = finder.entries_for_export(session, principal, params, settings.anonymous_catalog)
            out.write_bytes(export_entries(_counted(found, count), fmt, principal))
    except AppError as exc:
        _print_failure(console, exc)
        raise typer.Exit(2) from None
    console.print(f"[green]已导出 {count[0]} 条信息资源到[/green] {out}")
