"""One application in a real Chromium, from the entry page to the narrowed grant: 民政局
applies for 公安局's 有条件共享 entry, 公安局 finds it in its queue with the due date and
approves it in part, 民政局 sees the grant with the fewer items.

The provider's queue is photographed (docs/screenshots/sharing-queue.png with
DATATONG_UPDATE_SCREENSHOTS=1, see tests/test_browser.py)."""

from __future__ import annotations

import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import PASSWORD, auth, create_entry
from test_browser import browser_page, playwright_api, shots  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser


def _login(page: Any, live_server: str, username: str, target: str) -> None:
    page.goto(f"{live_server}/login?next={target}")
    page.get_by_label("用户名").fill(username)
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录").click()
    page.wait_for_url(re.compile(re.escape(target) + "$"))


def _logout(page: Any) -> None:
    page.get_by_role("button", name="退出").click()
    page.wait_for_url(re.compile(r"/catalog$"))


def test_apply_approve_in_part_and_see_the_grant(
    client: Any,
    live_server: str,
    browser_page: Any,  # noqa: F811
    shots: Path,  # noqa: F811
) -> None:
    expect = playwright_api.expect
    entry = create_entry(client, publish=True)  # 户籍人口基本信息 (公安局, 有条件共享)
    page = browser_page

    # 民政局 applies from the entry page.
    _login(page, live_server, "mz_officer", f"/catalog/{entry['id']}")
    page.get_by_role("link", name="申请共享").click()
    page.wait_for_url(re.compile(rf"/sharing/apply\?entry_id={entry['id']}$"))
    expect(page.locator("h1")).to_have_text("申请共享")
    page.get_by_label("身份证号").check()
    page.get_by_label("姓名").check()
    page.get_by_label("用途类别").select_option("verification")
    page.get_by_label("用途说明").fill("最低生活保障资格核验")
    page.get_by_label("依据").fill("《社会救助暂行办法》第十一条")
    end = date.today() + timedelta(days=365)
    page.get_by_label("截止日期").fill(end.isoformat())
    page.get_by_label("预计每日数据量（条）").fill("1000")
    page.get_by_label("每分钟调用次数").fill("60")
    page.get_by_label("系统名称").fill("低保审核系统")
    page.get_by_label("我已阅读并签署以上数据安全承诺").check()
    page.get_by_role("button", name="提交申请").click()
    page.wait_for_url(re.compile(r"/sharing/applications/\d+$"))
    app_id = int(page.url.rsplit("/", 1)[1])
    expect(page.locator(".alert-success")).to_contain_text("申请已提交")
    expect(page.locator(".entry-badges")).to_contain_text("待提供方答复")
    due = client.get(f"/api/v1/sharing/applications/{app_id}", headers=auth(client, "mz_officer")).json()["due_at"]
    assert due
    expect(page.locator(".due-box")).to_contain_text(due)
    expect(page.locator(".due-box")).to_contain_text("个工作日")
    _logout(page)

    # 公安局 finds it in its queue, with the due date, and approves only 身份证号.
    _login(page, live_server, "ga_officer", "/sharing/applications")
    page.get_by_role("link", name="待我答复").click()
    page.wait_for_url(re.compile(r"tab=provider"))
    row = page.locator(f'tr[data-app-id="{app_id}"]')
    expect(row).to_contain_text("户籍人口基本信息")
    expect(row).to_contain_text("示范市民政局")
    expect(row).to_contain_text(due)
    expect(row).to_contain_text("个工作日")
    page.screenshot(path=str(shots / "sharing-queue.png"), full_page=True)
    row.get_by_role("link", name="户籍人口基本信息").click()
    page.wait_for_url(re.compile(rf"/sharing/applications/{app_id}$"))
    partial = page.get_by_role("form", name="部分同意")
    items = partial.get_by_role("group", name=re.compile("同意的信息项"))
    expect(items.get_by_role("checkbox")).to_have_count(2)  # only the items asked for
    items.get_by_label("姓名").uncheck()
    expect(items.get_by_label("身份证号")).to_be_checked()
    partial.get_by_label("理由").fill("姓名不在共享条件范围内")
    partial.get_by_role("button", name="部分同意").click()
    page.wait_for_url(re.compile(rf"/sharing/applications/{app_id}$"))
    expect(page.locator(".entry-badges")).to_contain_text("部分同意")
    expect(page.locator(".approved-items")).to_have_text("身份证号")
    _logout(page)

    # 民政局 holds the narrowed grant.
    _login(page, live_server, "mz_officer", "/sharing/grants")
    expect(page.get_by_role("link", name="我的授权")).to_have_attribute("aria-current", "page")
    grant_row = page.locator("tr.grant-row").filter(has_text="户籍人口基本信息")
    expect(grant_row).to_have_count(1)
    expect(grant_row.locator(".item-chip")).to_have_text(["身份证号"])
    expect(grant_row).to_contain_text("有效")
    expect(grant_row).to_contain_text(f"申请第 {app_id} 号")
    grant_row.get_by_role("link", name="户籍人口基本信息").click()
    page.wait_for_url(re.compile(r"/sharing/grants/\d+$"))
    expect(page.locator(".granted-items .item-chip")).to_have_count(1)
    expect(page.locator(".granted-items")).to_contain_text("身份证号")
