"""Catalog import/export as Excel and CSV: template, row-by-row errors, CLI."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from conftest import auth, create_entry
from fastapi.testclient import TestClient
from openpyxl import load_workbook
from sqlalchemy import delete, func, select
from typer.testing import CliRunner

from datatong.catalog import excel
from datatong.catalog import search as fts
from datatong.catalog.models import CatalogEntry
from datatong.db import session_scope
from datatong.settings import Settings, get_settings

IMPORT = "/api/v1/catalog/import"
EXPORT = "/api/v1/catalog/export"


# ---------------------------------------------------------------- helpers


def entry_row(seq: Any, **overrides: Any) -> dict[str, Any]:
    """A valid 信息资源 row, keyed by the template's Chinese headers."""
    row: dict[str, Any] = {
        "序号": seq,
        "信息资源名称": f"户籍人口基本信息{seq}",
        "信息资源分类代码": "101",
        "提供方内部部门": "人口管理支队",
        "摘要": "全市户籍人口的姓名、身份证号、出生日期等基本信息",
        "关键字": "人口,户籍",
        "信息资源格式分类": "数据库",
        "信息资源格式类型": "PostgreSQL table",
        "共享类型": "有条件共享",
        "共享条件": "仅用于政务服务中的身份核验",
        "共享方式": "共享平台",
        "共享方式子类": "接口",
        "是否向社会开放": "否",
        "更新周期": "每日",
        "发布日期": date(2024, 1, 5),
    }
    row.update(overrides)
    return row


def item_row(seq: Any, name: str, data_type: str = "字符型", length: Any = 18, **kw: Any) -> dict:
    return {"资源序号": seq, "信息项名称": name, "数据类型": data_type, "长度": length, **kw}


def fill_template(entries: list[dict[str, Any]], items: list[dict[str, Any]]) -> bytes:
    """The downloaded template, filled in the way an officer would."""
    wb = load_workbook(io.BytesIO(excel.write_template()))
    for sheet, rows in (("信息资源", entries), ("信息项", items)):
        ws = wb[sheet]
        headers = [str(c.value) for c in ws[1]]
        for row in rows:
            assert set(row) <= set(headers), set(row) - set(headers)
            ws.append([row.get(h) for h in headers])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def upload(client: TestClient, data: bytes, filename: str, user: str | None = "ga_officer") -> Any:
    headers = auth(client, user) if user else {}
    return client.post(IMPORT, files={"file": (filename, data)}, headers=headers)


def entry_count(settings: Settings) -> int:
    with session_scope(settings.database_url) as session:
        return session.scalar(select(func.count()).select_from(CatalogEntry)) or 0


def by_code(client: TestClient, code: str, user: str = "admin") -> dict[str, Any]:
    r = client.get(f"/api/v1/catalog/by-code/{code}", headers=auth(client, user))
    assert r.status_code == 200, r.text
    return r.json()


def flat_csv(rows: list[dict[str, Any]], encoding: str) -> bytes:
    headers = list(dict.fromkeys(h for row in rows for h in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, headers, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode(encoding)


def csv_row(name: str, item: str, data_type: str = "C", length: Any = 20, **kw: Any) -> dict:
    row = entry_row(1, **{"信息资源名称": name, "发布日期": "2024-01-05"})
    del row["序号"]
    return {**row, "信息项名称": item, "数据类型": data_type, "长度": length, **kw}


# ---------------------------------------------------------------- template


def test_template_download(client: TestClient) -> None:
    r = client.get("/api/v1/catalog/template.xlsx")
    assert r.status_code == 200
    assert r.headers["content-type"] == excel.XLSX_MIME
    disposition = r.headers["content-disposition"]
    assert "filename*=UTF-8''%E7%9B%AE%E5%BD%95%E7%BC%96%E5%88%B6%E6%A8%A1%E6%9D%BF.xlsx" in (disposition)
    wb = load_workbook(io.BytesIO(r.content))
    assert wb.sheetnames == ["信息资源", "信息项", "填写说明"]
    entries, items = wb["信息资源"], wb["信息项"]
    headers = [c.value for c in entries[1]]
    assert headers[0] == "序号" and headers[-1] == "信息资源代码(可选)"
    for name in ("信息资源名称", "共享条件", "不予共享依据", "是否向社会开放", "元数据维护方"):
        assert name in headers
    assert [c.value for c in items[1]] == [
        "资源序号",
        "信息项名称",
        "信息项代码",
        "数据类型",
        "长度",
        "描述",
        "敏感级别",
        "是否权威来源",
    ]
    assert entries["A1"].font.b and entries.freeze_panes == "C2"
    assert entries.max_row == 1  # blank: importing it as-is imports nothing
    lists = {dv.formula1 for dv in entries.data_validations.dataValidation}
    assert '"无条件共享,有条件共享,不予共享"' in lists
    assert '"是,否"' in lists
    help_text = " ".join(str(c) for row in wb["填写说明"].iter_rows(values_only=True) for c in row)
    assert "有条件共享" in help_text and "字符型（C）" in help_text


def test_template_round_trip(client: TestClient, settings: Settings) -> None:
    data = fill_template(
        [
            entry_row(1),
            # Codes are accepted as well as the Chinese labels.
            entry_row(
                2,
                **{
                    "共享类型": "unconditional",
                    "共享条件": None,
                    "更新周期": "monthly",
                    "是否向社会开放": "是",
                    "开放条件": "无",
                    "发布日期": None,
                },
            ),
        ],
        [
            item_row(1, "身份证号", 描述="公民身份号码", 敏感级别="个人信息", 是否权威来源="是"),
            item_row(1, "出生日期", "日期型", None),
            item_row(2, "姓名", "C", 50),
        ],
    )
    r = upload(client, data, "目录.xlsx")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["created"] == 2
    assert all(code.startswith("101-GA-") for code in body["codes"])
    first, second = (by_code(client, c, "ga_officer") for c in body["codes"])
    assert first["name"] == "户籍人口基本信息1" and first["status"] == "draft"
    assert first["share_type"] == "conditional" and first["share_method"] == "platform"
    assert first["provider_code"] == "GA" and first["provider_unit"] == "人口管理支队"
    assert first["release_date"] == "2024-01-05" and first["is_open"] is False
    assert [(i["name"], i["data_type"], i["length"]) for i in first["items"]] == [
        ("身份证号", "C", 18),
        ("出生日期", "D", 8),  # fixed width filled in
    ]
    assert first["items"][0]["sensitivity"] == "personal" and first["items"][0]["is_authoritative"]
    assert second["share_type"] == "unconditional" and second["update_cycle"] == "monthly"
    assert second["is_open"] is True and second["release_date"] is None
    versions = client.get(f"/api/v1/catalog/entries/{first['id']}/versions", headers=auth(client, "ga_officer")).json()
    assert [v["action"] for v in versions] == ["import"]
    assert entry_count(settings) == 2


# ---------------------------------------------------------------- row-by-row errors


def test_bad_rows_reported_and_nothing_imported(client: TestClient, settings: Settings) -> None:
    create_entry(client)
    before = entry_count(settings)
    data = fill_template(
        [
            entry_row(1),  # row 2: fine
            entry_row(2, 共享条件=None),  # row 3: 有条件共享 without conditions
            entry_row(3, 共享类型="部分共享"),  # row 4: unknown label
            entry_row(4),  # row 5: no data items
            entry_row(5, 共享类型="不予共享", 共享条件=None, 共享方式=None, 共享方式子类=None),
            entry_row(6, 提供方代码="MZ"),  # row 7: another department's entry
        ],
        [
            item_row(1, "身份证号"),  # row 2
            item_row(2, "身份证号"),  # row 3
            item_row(2, "姓名", "字符型", None),  # row 4: C without 长度
            item_row(3, "身份证号"),  # row 5
            item_row(5, "身份证号"),  # row 6
            item_row(1, "住址", "C", "十八"),  # row 7: not a number
            item_row(6, "身份证号"),  # row 8
        ],
    )
    r = upload(client, data, "目录.xlsx")
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "catalog.import_invalid"
    assert error["message"] == "导入失败：共 7 处错误，未导入任何数据"
    got = [(d["sheet"], d["row"], d["column"], d["code"], d["message"]) for d in error["details"]]
    assert got == [
        (
            "信息资源",
            3,
            "共享条件",
            "catalog.share_condition_required",
            "有条件共享的信息资源必须注明共享条件",
        ),
        (
            "信息资源",
            4,
            "共享类型",
            "import.value_unknown",
            "共享类型“部分共享”不在可选值中，可选：无条件共享、有条件共享、不予共享",
        ),
        ("信息资源", 5, "序号", "catalog.items_required", "至少需要一个信息项"),
        (
            "信息资源",
            6,
            "不予共享依据",
            "catalog.no_share_basis_required",
            "不予共享的信息资源必须注明法律、行政法规或党中央、国务院政策依据",
        ),
        ("信息资源", 7, "提供方代码", "forbidden", "只能导入本部门的信息资源"),
        ("信息项", 4, "长度", "catalog.item_length_required", "信息项“姓名”为字符型，必须填写长度"),
        # The type error only: the rule "C needs a length" would restate it.
        ("信息项", 7, "长度", "import.integer_invalid", "长度须为正整数，“十八”无效"),
    ]
    assert all(d["message_en"] for d in error["details"])
    assert entry_count(settings) == before


def test_cell_type_errors(client: TestClient) -> None:
    data = fill_template(
        [entry_row(1, 发布日期="2024-13-45", 是否向社会开放="也许"), entry_row(1)],
        [item_row(1, "姓名", "文本"), item_row(9, "身份证号")],
    )
    entries, errors = excel.read_entries(data, "目录.xlsx")
    assert len(entries) == 2
    got = [(e.sheet, e.row, e.column, e.code) for e in errors]
    assert got == [
        ("信息资源", 2, "是否向社会开放", "import.bool_invalid"),
        ("信息资源", 2, "发布日期", "import.date_invalid"),
        ("信息资源", 3, "序号", "import.key_duplicate"),
        ("信息项", 2, "数据类型", "import.value_unknown"),
        ("信息项", 3, "资源序号", "import.key_unknown"),
    ]


def test_text_too_long_reported_at_its_cell(client: TestClient) -> None:
    data = fill_template([entry_row(1, 信息资源名称="名" * 301)], [item_row(1, "姓名")])
    r = upload(client, data, "目录.xlsx")
    assert r.status_code == 422
    [detail] = r.json()["error"]["details"]
    assert (detail["row"], detail["column"]) == (2, "信息资源名称")
    assert detail["message"] == "信息资源名称不能超过 300 个字符"


@pytest.mark.parametrize(
    ("data", "filename", "status", "code"),
    [
        (b"PK\x03\x04 not really a workbook", "目录.xlsx", 422, "file.unreadable"),
        (b"\xd0\xcf\x11\xe0 old excel", "目录.xls", 415, "file.type_unsupported"),
        ("名称,分类\n户籍,101\n".encode(), "目录.csv", 422, "import.header_invalid"),
        (excel.write_template(), "空白模板.xlsx", 422, "file.empty"),
    ],
)
def test_unusable_files(client: TestClient, data: bytes, filename: str, status: int, code: str) -> None:
    r = upload(client, data, filename)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


def test_header_error_names_the_missing_columns(client: TestClient) -> None:
    r = upload(client, "名称,分类\n户籍,101\n".encode(), "目录.csv")
    message = r.json()["error"]["message"]
    assert "缺少列" in message and "信息资源名称" in message and "信息项名称" in message
    assert "分类" not in {d["column"] for d in r.json()["error"]["details"]}


def test_file_too_large(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(excel, "MAX_BYTES", 100)
    r = upload(client, b"x" * 101, "目录.csv")
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "file.too_large"


@pytest.mark.parametrize(("user", "status"), [("auditor", 403), (None, 401)])
def test_refused_roles(client: TestClient, settings: Settings, user: str | None, status: int) -> None:
    data = fill_template([entry_row(1)], [item_row(1, "身份证号")])
    r = upload(client, data, "目录.xlsx", user)
    assert r.status_code == status, r.text
    assert entry_count(settings) == 0


# ---------------------------------------------------------------- CSV


@pytest.mark.parametrize("encoding", ["utf-8-sig", "gb18030"])
def test_csv_import(client: TestClient, encoding: str) -> None:
    rows = [
        csv_row("户籍人口基本信息", "身份证号", "C", 18),
        # Repeated entry columns may be left blank on the following rows.
        {
            "信息资源名称": "户籍人口基本信息",
            "信息项名称": "姓名",
            "数据类型": "字符型",
            "长度": "50",
        },
        csv_row("流动人口登记信息", "居住证号", 共享类型="无条件共享", 共享条件=""),
    ]
    r = upload(client, flat_csv(rows, encoding), "目录.csv")
    assert r.status_code == 201, r.text
    first, second = (by_code(client, c) for c in r.json()["codes"])
    assert first["name"] == "户籍人口基本信息"
    assert [(i["name"], i["length"]) for i in first["items"]] == [("身份证号", 18), ("姓名", 50)]
    assert second["share_type"] == "unconditional" and len(second["items"]) == 1


def test_csv_errors_point_at_rows(client: TestClient) -> None:
    rows = [
        {"序号": "1", **csv_row("户籍人口基本信息", "身份证号")},
        {"序号": "1", **csv_row("户籍人口基本信息", "姓名", "C", "", 摘要="另一个摘要")},
        {"序号": "2", **csv_row("流动人口登记信息", "", "", "")},
    ]
    r = upload(client, flat_csv(rows, "utf-8-sig"), "人口目录.csv")
    assert r.status_code == 422
    got = [(d["sheet"], d["row"], d["column"], d["code"]) for d in r.json()["error"]["details"]]
    assert got == [
        ("人口目录.csv", 3, "摘要", "import.entry_inconsistent"),
        ("人口目录.csv", 3, "长度", "catalog.item_length_required"),
        ("人口目录.csv", 4, "信息项名称", "catalog.items_required"),
    ]


# ---------------------------------------------------------------- export


def _three_entries(client: TestClient) -> list[dict[str, Any]]:
    a = create_entry(client, publish=True, is_open=True)
    b = create_entry(
        client,
        name="户籍迁移登记信息",
        summary="=SUM(A1) 户籍迁入迁出登记",
        share_type="none",
        no_share_basis="《户口登记条例》",
        share_method=None,
        share_subtype=None,
        share_condition=None,
    )
    create_entry(
        client,
        "mz_officer",
        name="低保对象名册",
        class_code="203",
        summary="城乡低保对象",
        keywords="低保",
    )
    return [a, b]


def _comparable(entry: dict[str, Any]) -> dict[str, Any]:
    skip = {
        "id",
        "status",
        "status_label",
        "version",
        "created_at",
        "modified_at",
        "metadata_updated_at",
    }
    out = {k: v for k, v in entry.items() if k not in skip}
    out["items"] = [{k: v for k, v in i.items() if k != "id"} for i in entry["items"]]
    return out


def _delete_all(settings: Settings) -> None:
    with session_scope(settings.database_url) as session:
        for entry_id in session.scalars(select(CatalogEntry.id)):
            fts.remove(session, entry_id)
        session.execute(delete(CatalogEntry))


@pytest.mark.parametrize("fmt", ["xlsx", "csv"])
def test_export_reimports(client: TestClient, settings: Settings, fmt: str) -> None:
    originals = _three_entries(client)
    r = client.get(EXPORT, params={"q": "户籍", "format": fmt, "sort": "code"}, headers=auth(client, "admin"))
    assert r.status_code == 200, r.text
    assert "filename*=UTF-8''" in r.headers["content-disposition"]
    if fmt == "csv":
        assert r.content.startswith(b"\xef\xbb\xbf")
        assert "'=SUM(A1)" in r.content.decode("utf-8-sig")  # not run as a formula by Excel
    else:
        wb = load_workbook(io.BytesIO(r.content))
        headers = [c.value for c in wb["信息资源"][1]]
        assert headers[-2:] == ["信息资源代码", "状态"]
        assert {row[-1] for row in wb["信息资源"].iter_rows(min_row=2, values_only=True)} == {
            "已发布",
            "草稿",
        }
    entries, errors = excel.read_entries(r.content, f"export.{fmt}")
    assert errors == [] and sorted(e.code or "" for e in entries) == sorted(e["code"] for e in originals)
    expected = {e["code"]: _comparable(by_code(client, e["code"])) for e in originals}
    _delete_all(settings)
    r = upload(client, r.content, f"export.{fmt}", "admin")
    assert r.status_code == 201, r.text
    assert sorted(r.json()["codes"]) == sorted(expected)
    for code, before in expected.items():
        assert _comparable(by_code(client, code)) == before


def _csv_rows(content: bytes) -> dict[str, dict[str, str]]:
    return {row["信息资源名称"]: row for row in csv.DictReader(io.StringIO(content.decode("utf-8-sig")))}


def test_export_respects_visibility_and_filters(client: TestClient) -> None:
    _three_entries(client)
    closed = {
        "share_type": "none",
        "no_share_basis": "《出境入境管理法》",
        "share_method": None,
        "share_subtype": None,
        "share_condition": None,
    }
    create_entry(client, publish=True, name="出入境证件信息", **closed)
    r = client.get(EXPORT, params={"format": "csv"}, headers=auth(client, "mz_officer"))
    rows = _csv_rows(r.content)
    # Another department's draft stays invisible; its published entries do not.
    assert set(rows) == {"户籍人口基本信息", "低保对象名册", "出入境证件信息"}
    # ... but why a resource is not shared is for the provider and the operator only.
    assert rows["出入境证件信息"]["不予共享依据"] == ""
    r = client.get(EXPORT, params={"share_type": "none", "output": "csv"}, headers=auth(client, "admin"))
    rows = _csv_rows(r.content)
    assert set(rows) == {"户籍迁移登记信息", "出入境证件信息"}
    assert rows["出入境证件信息"]["不予共享依据"] == "《出境入境管理法》"
    r = client.get(EXPORT, params={"format": "pdf"}, headers=auth(client, "admin"))
    assert r.status_code == 422


# ---------------------------------------------------------------- command line


@pytest.fixture
def cli(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    """The CLI pointed at the test database (get_settings is cached, hence the clears)."""
    monkeypatch.setenv("DATATONG_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("DATATONG_SECRET_KEY", settings.secret_key)
    monkeypatch.setenv("DATATONG_VAR_DIR", str(settings.var_dir))
    monkeypatch.setenv("COLUMNS", "200")  # Rich tables stay on one line per row
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_cli_import_and_export(cli: CliRunner, world: dict[str, Any], settings: Settings, tmp_path: Path) -> None:
    from datatong.cli import app

    good = tmp_path / "目录.xlsx"
    good.write_bytes(fill_template([entry_row(1), entry_row(2)], [item_row(1, "身份证号"), item_row(2, "姓名")]))
    result = cli.invoke(app, ["catalog", "import", str(good), "--as", "ga_officer"])
    assert result.exit_code == 0, result.output
    assert "已导入 2 条" in result.output
    assert entry_count(settings) == 2

    bad = tmp_path / "错误.xlsx"
    bad.write_bytes(fill_template([entry_row(1, 共享条件=None)], [item_row(1, "身份证号")]))
    result = cli.invoke(app, ["catalog", "import", str(bad), "--as", "ga_officer"])
    assert result.exit_code == 2
    assert "导入失败：共 1 处错误" in result.output
    assert "共享条件" in result.output and "有条件共享的信息资源必须注明共享条件" in result.output
    assert entry_count(settings) == 2

    result = cli.invoke(app, ["catalog", "import", str(good), "--as", "nobody"])
    assert result.exit_code == 2 and "nobody 不存在" in result.output

    out = tmp_path / "导出.csv"
    result = cli.invoke(app, ["catalog", "export", str(out), "--as", "ga_officer", "--q", "户籍"])
    assert result.exit_code == 0, result.output
    entries, errors = excel.read_entries(out.read_bytes(), out.name)
    assert errors == [] and len(entries) == 2 and all(e.code for e in entries)

    template = tmp_path / "模板.xlsx"
    result = cli.invoke(app, ["catalog", "template", str(template)])
    assert result.exit_code == 0 and template.read_bytes()[:2] == b"PK"
