"""The auditor in a real Chromium: filter the trail (htmx), load more, open a record,
export what the filters show as CSV and Excel."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from conftest import PASSWORD
from test_browser import browser_page, playwright_api, shots  # noqa: F401  (fixtures)

from datatong.audit import export
from datatong.audit.service import Event, append
from datatong.db import engine_for

pytestmark = pytest.mark.browser


def _seed(settings: Any) -> None:
    """60 reads of GA's catalog by 民政局 and one refused login, all in November 2020."""
    events = [
        Event(
            actor_kind="user",
            actor="mz_officer",
            action="catalog.entry.read",
            actor_department="MZ",
            resource=f"GA-{i:03d}",
            subject_department="GA",
            occurred_at=f"2020-11-20T{i // 60:02d}:{i % 60:02d}:00.000000Z",
        )
        for i in range(60)
    ]
    events.append(
        Event(
            actor_kind="anonymous",
            actor="ga_officer",
            action="auth.login_failed",
            resource="user:ga_officer",
            subject_department="GA",
            outcome="refused",
            reason="auth.bad_credentials",
            detail='{"attempts": 3, "locked": false}',
            occurred_at="2020-11-21T08:00:00.000000Z",
        )
    )
    with engine_for(settings.database_url).begin() as conn:
        append(conn, events)


def test_auditor_searches_and_exports(client: Any, settings: Any, live_server: str, browser_page: Any, shots: Path):  # noqa: F811
    expect = playwright_api.expect
    _seed(settings)
    page = browser_page

    page.goto(f"{live_server}/login?next=/audit")
    page.get_by_label("用户名").fill("auditor")
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录").click()
    page.wait_for_url(re.compile(r"/audit$"))
    expect(page.get_by_role("link", name="审计日志")).to_have_attribute("aria-current", "page")

    # Filters apply as they change (htmx) and land in the address bar.
    rows = page.locator("#audit-rows tr.audit-row")
    page.get_by_label("结束日期").fill("2020-11-30")
    page.get_by_label("结束日期").dispatch_event("change")
    expect(page).to_have_url(re.compile(r"[?&]until=2020-11-30"))
    expect(rows).to_have_count(50)
    expect(rows.first).to_contain_text("登录失败")
    expect(rows.first).to_contain_text("拒绝")
    expect(rows.first).to_contain_text("2020-11-21 16:00:00")  # Beijing time

    # 更多: the next page is appended in place.
    page.get_by_role("link", name="更多记录").click()
    expect(rows).to_have_count(61)
    expect(page.get_by_role("link", name="更多记录")).to_have_count(0)

    page.get_by_label("操作", exact=True).select_option("auth.login_failed")
    expect(page).to_have_url(re.compile(r"[?&]action=auth.login_failed"))
    expect(rows).to_have_count(1)

    # A row opens in place: all fields, the detail JSON indented, the hashes.
    detail = page.locator("tr.audit-detail").first
    expect(detail).to_be_hidden()
    rows.first.get_by_role("link", name="展开").click()
    expect(detail).to_be_visible()
    expect(detail.locator(".audit-json")).to_contain_text('"attempts": 3')
    expect(detail).to_contain_text("auth.bad_credentials")
    expect(detail.locator(".audit-hash").first).to_have_text(re.compile(r"^[0-9a-f]{64}$"))
    page.screenshot(path=str(shots / "audit.png"), full_page=True)

    # The export buttons carry the filters in force.
    with page.expect_download() as info:
        page.get_by_role("link", name="导出 CSV").click()
    download = info.value
    assert re.fullmatch(r"审计日志-\d{8}\.csv", download.suggested_filename)
    data = Path(download.path()).read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    header, *lines = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert header == export.HEADERS
    assert len(lines) == 1
    row = dict(zip(header, lines[0], strict=True))
    assert (row["操作"], row["结果"], row["操作者"]) == ("登录失败", "拒绝", "ga_officer")

    page.get_by_label("操作", exact=True).select_option("catalog.")
    expect(rows).to_have_count(50)
    with page.expect_download() as info:
        page.get_by_role("link", name="导出 Excel").click()
    assert info.value.suggested_filename.endswith(".xlsx")
    ws = openpyxl.load_workbook(io.BytesIO(Path(info.value.path()).read_bytes()))["审计日志"]
    values = list(ws.iter_rows(min_row=2, values_only=True))
    assert len(values) == 60
    assert {v[export.HEADERS.index("操作")] for v in values} == {"查看目录"}
    assert values[0][export.HEADERS.index("数据所属部门")] == "示范市公安局"
