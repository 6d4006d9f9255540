"""The audit trail as CSV or Excel, streamed: memory stays flat for a million rows.

CSV leaves row batch by row batch as it is read (UTF-8 with BOM, so Excel reads the
Chinese). An .xlsx is a zip that can only be closed at the end: openpyxl's write-only
mode spills the rows to a temporary file, which is then sent in chunks.

Times stay in ISO-8601 UTC exactly as stored and hashed, with Beijing time beside them;
every stored field is there, so an export can be checked against the chain offline.
"""

from __future__ import annotations

import csv
import io
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter

from datatong.audit import labels

XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CSV_MIME = "text/csv; charset=utf-8"
MEDIA = {"csv": CSV_MIME, "xlsx": XLSX_MIME}
CSV_BATCH = 1_000
FILE_CHUNK = 256 * 1024
# Characters an XML 1.0 document (hence a worksheet) cannot hold.
_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")

Departments = dict[str, str]
Getter = Callable[[Any, Departments], Any]


def _dept_name(field: str) -> Getter:
    return lambda r, depts: depts.get(getattr(r, field) or "", "")


# (header, width in the sheet, value of a record row)
COLUMNS: list[tuple[str, int, Getter]] = [
    ("序号", 10, lambda r, d: r.seq),
    ("发生时间（UTC）", 29, lambda r, d: r.occurred_at),
    ("发生时间（北京时间）", 20, lambda r, d: labels.local_time(r.occurred_at)),
    ("操作者类型", 10, lambda r, d: labels.actor_kind_label(r.actor_kind)),
    ("操作者", 16, lambda r, d: r.actor),
    ("操作者部门代码", 14, lambda r, d: r.actor_department),
    ("操作者部门", 20, _dept_name("actor_department")),
    ("操作代码", 22, lambda r, d: r.action),
    ("操作", 14, lambda r, d: labels.action_label(r.action)),
    ("资源", 28, lambda r, d: r.resource),
    ("数据所属部门代码", 14, lambda r, d: r.subject_department),
    ("数据所属部门", 20, _dept_name("subject_department")),
    ("结果", 8, lambda r, d: labels.outcome_label(r.outcome)),
    ("原因", 18, lambda r, d: r.reason),
    ("用途", 24, lambda r, d: r.purpose),
    ("信息项", 24, lambda r, d: r.items),
    ("授权编号", 10, lambda r, d: r.grant_id),
    ("行数", 10, lambda r, d: r.rows),
    ("请求编号", 20, lambda r, d: r.request_id),
    ("客户端地址", 16, lambda r, d: r.client_addr),
    ("详情", 40, lambda r, d: r.detail),
    ("哈希算法", 10, lambda r, d: r.alg),
    ("前一哈希", 20, lambda r, d: r.prev_hash),
    ("哈希", 20, lambda r, d: r.hash),
]
HEADERS = [c[0] for c in COLUMNS]


def row_values(record: Any, departments: Departments) -> list[Any]:
    return [get(record, departments) for _, _, get in COLUMNS]


def _csv_cell(value: Any) -> Any:
    """Formula-like text gets a leading quote so a spreadsheet does not run it (CSV
    injection), as in the catalog export; numbers and None pass as they are."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value
    return value


def csv_chunks(records: Iterable[Any], departments: Departments) -> Iterator[bytes]:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(HEADERS)
    yield "\ufeff".encode() + buf.getvalue().encode()  # the BOM: Excel then reads UTF-8
    buf.seek(0)
    buf.truncate()
    for n, record in enumerate(records, start=1):
        writer.writerow([_csv_cell(v) for v in row_values(record, departments)])
        if n % CSV_BATCH == 0:
            yield buf.getvalue().encode()
            buf.seek(0)
            buf.truncate()
    if buf.tell():
        yield buf.getvalue().encode()


def _xlsx_value(ws: Any, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if _ILLEGAL.search(value):
        value = _ILLEGAL.sub("", value)
    if value[:1] == "=":  # text that looks like a formula stays text
        cell = WriteOnlyCell(ws, value)
        cell.data_type = "s"
        return cell
    return value


def xlsx_chunks(records: Iterable[Any], departments: Departments, title: str = "审计日志") -> Iterator[bytes]:
    wb = Workbook(write_only=True)
    ws = wb.create_sheet(title)
    for i, (_, width, _) in enumerate(COLUMNS, start=1):
        ws.column_dimensions[get_column_letter(i)].width = width
    ws.freeze_panes = "A2"
    bold, fill = Font(bold=True), PatternFill("solid", fgColor="DCE6F2")
    header = []
    for text in HEADERS:
        cell = WriteOnlyCell(ws, text)
        cell.font, cell.fill, cell.alignment = bold, fill, Alignment(vertical="center")
        header.append(cell)
    ws.append(header)
    for record in records:
        ws.append([_xlsx_value(ws, v) for v in row_values(record, departments)])
    with tempfile.TemporaryFile() as out:
        wb.save(out)
        out.seek(0)
        while chunk := out.read(FILE_CHUNK):
            yield chunk


def chunks(fmt: str, records: Iterable[Any], departments: Departments) -> Iterator[bytes]:
    return xlsx_chunks(records, departments) if fmt == "xlsx" else csv_chunks(records, departments)
