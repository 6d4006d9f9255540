"""A data source in a real Chromium: the platform admin connects a published entry to a
table of the provider's database from the entry page, 「测试连接」 (htmx) says the table is
missing, the table name is corrected on the edit form, and the test says 连接正常."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from conftest import PASSWORD, create_entry
from test_browser import browser_page, playwright_api  # noqa: F401  (fixtures)
from test_exchange_subscriptions import ITEMS, Provider

pytestmark = pytest.mark.browser


def _login(page: Any, live_server: str, username: str, target: str) -> None:
    page.goto(f"{live_server}/login?next={target}")
    page.get_by_label("用户名").fill(username)
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录").click()
    page.wait_for_url(re.compile(re.escape(target) + "$"))


def test_admin_connects_a_source_and_tests_it(
    client: Any,
    live_server: str,
    browser_page: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    expect = playwright_api.expect
    provider = Provider(tmp_path / "ga.db")
    entry = create_entry(client, "ga_officer", publish=True, name="人口变更信息", items=ITEMS)
    page = browser_page

    _login(page, live_server, "admin", f"/catalog/{entry['id']}")
    page.get_by_role("link", name="配置数据源").click()
    page.wait_for_url(re.compile(rf"/exchange/sources/new\?entry_id={entry['id']}$"))
    expect(page.locator("h1")).to_have_text("配置数据源")
    page.get_by_label("数据库连接 URL").fill(provider.url)
    page.get_by_label("表或视图").fill("persons")  # wrong
    page.get_by_label("主键信息项").select_option("身份证号")
    page.locator("#col-0").fill("sfzh")
    page.locator("#col-1").fill("xm")
    page.locator("#col-2").fill("hyzk")
    page.get_by_role("button", name="保存").click()
    page.wait_for_url(re.compile(r"/exchange/sources/\d+$"))
    expect(page.locator(".alert-success")).to_contain_text("数据源已保存")
    expect(page.locator("#source-status")).to_contain_text("未测试")

    page.get_by_role("button", name="测试连接").click()
    result = page.locator("#test-result")
    expect(result).to_contain_text("连接失败")
    expect(result).to_contain_text("数据源中没有表或视图：persons")
    expect(result).to_contain_text("exchange.source_table_missing")
    expect(page.locator("#source-status")).to_contain_text("异常")  # swapped in beside the answer

    page.get_by_role("link", name="修改连接").click()
    page.wait_for_url(re.compile(r"/exchange/sources/\d+/edit$"))
    page.get_by_label("表或视图").fill("person")
    page.get_by_role("button", name="保存").click()
    page.wait_for_url(re.compile(r"/exchange/sources/\d+$"))
    page.get_by_role("button", name="测试连接").click()
    expect(result).to_contain_text("连接正常")
    expect(page.locator("#source-status")).to_contain_text("正常")
    expect(page.locator("#source-status")).not_to_contain_text("异常")
