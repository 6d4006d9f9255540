"""Read department rows from CSV or Excel (columns code,name,level,parent_code…)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from datatong.errors import invalid

HEADERS = {
    "部门代码": "code",
    "部门名称": "name",
    "层级": "level",
    "上级部门代码": "parent_code",
    "简称": "short_name",
    "联系方式": "contact",
}


def read_rows(path: Path) -> list[dict[str, str]]:
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        from openpyxl import load_workbook

        ws = load_workbook(path, read_only=True).active
        assert ws is not None
        raw = [["" if v is None else str(v) for v in row] for row in ws.iter_rows(values_only=True)]
    elif path.suffix.lower() == ".csv":
        text = path.read_bytes().decode("utf-8-sig")
        raw = list(csv.reader(io.StringIO(text)))
    else:
        raise invalid("file.type_unsupported", "只支持 .csv 或 .xlsx 文件", "Only .csv or .xlsx files", "file")
    if not raw:
        raise invalid("file.empty", "文件为空", "The file is empty", "file")
    header = [HEADERS.get(h.strip(), h.strip()) for h in raw[0]]
    missing = {"code", "name", "level"} - set(header)
    if missing:
        raise invalid(
            "file.columns_missing",
            f"缺少列：{', '.join(sorted(missing))}",
            f"Missing columns: {', '.join(sorted(missing))}",
            "file",
        )
    return [dict(zip(header, (c.strip() for c in row), strict=False)) for row in raw[1:] if any(row)]
