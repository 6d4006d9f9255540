"""The web UI in a real Chromium (Playwright): search, open, edit, see the new version.

Screenshots of the search and entry pages go to the test's temporary folder; with
DATATONG_UPDATE_SCREENSHOTS=1 they replace the README tour's docs/screenshots/ (only
where a CJK font is installed, e.g. Debian's fonts-noto-cjk, else Chinese shows as boxes).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import PASSWORD, create_entry
from fastapi.testclient import TestClient

pytestmark = pytest.mark.browser

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where to write screenshots: the docs only when asked to and able to render Chinese."""
    if os.environ.get("DATATONG_UPDATE_SCREENSHOTS") != "1":
        return tmp_path
    fc_list = shutil.which("fc-list")
    fonts = subprocess.run([fc_list, ":lang=zh", "family"], capture_output=True, text=True) if fc_list else None
    if not (fonts and fonts.stdout.strip()):
        pytest.fail("DATATONG_UPDATE_SCREENSHOTS=1 needs a CJK font (apt-get install fonts-noto-cjk)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS


@pytest.fixture
def browser_page() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed at /usr/bin/chromium")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1360, "height": 900}, locale="zh-CN", device_scale_factor=1)
        page = context.new_page()
        page.set_default_timeout(15_000)
        try:
            yield page
        finally:
            context.close()
            browser.close()


def _published_catalog(client: TestClient) -> dict[str, Any]:
    """A few published entries from three departments; returns the one the test edits."""
    target = create_entry(client, publish=True, is_open=True)  # 户籍人口基本信息 (GA)
    create_entry(
        client,
        publish=True,
        name="流动人口居住登记信息",
        share_type="unconditional",
        share_condition=None,
        summary="流动人口在本市办理居住登记、居住证的信息",
        keywords="人口,居住证",
        update_cycle="realtime",
    )
    create_entry(
        client,
        username="mz_officer",
        publish=True,
        name="人口死亡登记信息",
        summary="殡葬服务机构登记的人口死亡信息",
        keywords="人口,死亡",
        update_cycle="monthly",
        format_category="spreadsheet",
        format_type="xlsx",
    )
    create_entry(
        client,
        username="mz_officer",
        publish=True,
        name="婚姻登记信息",
        summary="结婚、离婚登记信息",
        keywords="婚姻",
        class_code="205",
        share_type="unconditional",
        share_condition=None,
    )
    create_entry(
        client,
        username="mz_officer",
        publish=True,
        name="社会组织法人登记信息",
        class_code="102",
        summary="社会团体、民办非企业单位、基金会的登记信息",
        keywords="法人,社会组织",
        share_type="unconditional",
        share_condition=None,
    )
    create_entry(
        client,
        username="ga_officer",
        name="治安重点单位信息（草稿）",
        summary="本局内部维护的人口密集场所名单",
        share_type="none",
        share_condition=None,
        no_share_basis="《中华人民共和国反恐怖主义法》",
        share_method=None,
        share_subtype=None,
    )
    return target


def test_search_open_edit_and_see_new_version(
    client: TestClient, live_server: str, browser_page: Any, shots: Path
) -> None:
    expect = playwright_api.expect
    entry = _published_catalog(client)
    page = browser_page

    page.goto(f"{live_server}/login?next=/catalog")
    page.get_by_label("用户名").fill("ga_officer")
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录").click()
    page.wait_for_url(re.compile(r"/catalog$"))
    expect(page.locator(".whoami-name")).to_have_text("公安数据管理员")

    # Live search: typing updates the results in place (htmx) and the address bar.
    results = page.locator("#search-body .result-title a")
    expect(results).to_have_count(6)  # five published + GA's own draft
    page.locator("#q").press_sequentially("人口", delay=60)
    expect(page).to_have_url(re.compile(r"[?&]q=%E4%BA%BA%E5%8F%A3"))
    expect(page.locator("#results-title")).to_contain_text("关键词“人口”")
    expect(results.filter(has_text="婚姻登记信息")).to_have_count(0)
    expect(results.filter(has_text="户籍人口基本信息")).to_have_count(1)
    page.screenshot(path=str(shots / "catalog-search.png"), full_page=True)

    results.filter(has_text="户籍人口基本信息").click()
    page.wait_for_url(re.compile(rf"/catalog/{entry['id']}$"))
    expect(page.locator("h1")).to_have_text("户籍人口基本信息")
    # Every life-cycle step is a version: created (1), submitted (2), approved (3).
    expect(page.locator("#history .version")).to_have_count(entry["version"])

    page.get_by_role("link", name="编辑").click()
    page.wait_for_url(re.compile(rf"/catalog/{entry['id']}/edit$"))
    rows = page.locator("#item-rows tr")
    before = rows.count()
    page.get_by_role("button", name="增加信息项").click()  # JS adds a row, no round trip
    expect(rows).to_have_count(before + 1)
    rows.last.get_by_role("button", name="删除此信息项").click()
    expect(rows).to_have_count(before)

    new_summary = "全市户籍人口的姓名、身份证号、出生日期、户籍地址、民族等基本信息"
    page.get_by_label("摘要").fill(new_summary)
    page.get_by_label("修改原因").fill("增加民族字段说明")
    page.get_by_role("button", name="保存修改").click()
    page.wait_for_url(re.compile(rf"/catalog/{entry['id']}$"))

    latest = page.locator("#history .version").first
    expect(latest.locator(".version-no")).to_have_text(f"版本 {entry['version'] + 1}")
    expect(latest).to_contain_text("修改")
    expect(latest).to_contain_text("增加民族字段说明")
    expect(latest.locator(".diff-label")).to_have_text(["摘要"])
    expect(latest.locator("ins")).to_have_text(new_summary)
    expect(page.locator(".alert-success")).to_contain_text("已保存")
    page.screenshot(path=str(shots / "entry.png"), full_page=True)
