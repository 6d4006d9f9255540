"""The exchange pages (数据交换) through the TestClient: data sources (list, one source,
the new/edit form, 测试连接 by htmx, file upload, enable/disable, delete) and
subscriptions (list and subscribe with the secret shown once, one subscription with
pause/resume, replay and cancel), each for the roles allowed and refused for others."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
from conftest import auth, create_entry
from fastapi.testclient import TestClient
from test_exchange_subscriptions import COLUMNS, ITEMS, Provider
from test_pages import csrf_of, login

from datatong.exchange import bus as bus_mod
from datatong.exchange import delivery
from datatong.settings import Settings

XS = "/api/v1/exchange/sources"
HTMX = {"HX-Request": "true"}


def as_user(client: TestClient, username: str) -> TestClient:
    browser = TestClient(client.app)
    login(browser, username)
    return browser


def post(browser: TestClient, path: str, data: dict[str, Any], **kw: Any) -> httpx.Response:
    token = csrf_of(browser, "/catalog")
    return browser.post(path, data={**data, "csrf_token": token}, follow_redirects=False, **kw)


def sql_form(entry_id: int, url: str, table: str = "person", **overrides: Any) -> dict[str, Any]:
    form: dict[str, Any] = {
        "entry_id": str(entry_id),
        "kind": "sql",
        "url": url,
        "password": "",
        "table_name": table,
        "key_item": "身份证号",
        "col-0": "sfzh",
        "col-1": "xm",
        "col-2": "hyzk",
        "change_column": "id",
        "change_kind": "increasing_id",
    }
    form.update(overrides)
    return form


def _entry(client: TestClient, **extra: Any) -> dict[str, Any]:
    return create_entry(client, "ga_officer", publish=True, name="人口变更信息", items=ITEMS, **extra)


def _api_source(client: TestClient, entry_id: int, provider: Provider) -> int:
    body = {
        "entry_id": entry_id,
        "kind": "sql",
        "url": provider.url,
        "table_name": "person",
        "key_item": "身份证号",
        "fields": COLUMNS,
        "change_column": "id",
        "change_kind": "increasing_id",
    }
    r = client.post(XS, json=body, headers=auth(client, "admin"))
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _source_id(location: str) -> int:
    match = re.fullmatch(r"/exchange/sources/(\d+)", location)
    assert match, location
    return int(match.group(1))


# ---------------------------------------------------------------- data sources


def test_source_pages_by_role(client: TestClient, tmp_path: Path) -> None:
    provider = Provider(tmp_path / "ga.db")
    entry = _entry(client)
    source_id = _api_source(client, entry["id"], provider)
    anonymous = TestClient(client.app)
    r = anonymous.get("/exchange/sources", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")

    for username in ("admin", "ga_officer", "ga_admin"):
        browser = as_user(client, username)
        listing = browser.get("/exchange/sources")
        assert listing.status_code == 200 and "人口变更信息" in listing.text and "未测试" in listing.text
        assert "外部数据库表/视图" in listing.text and 'aria-current="page">数据源' in listing.text
        page = browser.get(f"/exchange/sources/{source_id}")
        assert page.status_code == 200
        assert "字段映射" in page.text and "sfzh" in page.text and "递增编号列" in page.text
        assert "测试连接" in page.text and "hx-post" in page.text
    # The entry page links the existing source for its editors.
    ga = as_user(client, "ga_officer")
    assert f'href="/exchange/sources/{source_id}"' in ga.get(f"/catalog/{entry['id']}").text
    # Other departments do not see it (404, as the API); an auditor has no exchange pages.
    mz = as_user(client, "mz_officer")
    assert "人口变更信息" not in mz.get("/exchange/sources").text
    assert mz.get(f"/exchange/sources/{source_id}").status_code == 404
    assert post(mz, f"/exchange/sources/{source_id}/test", {}).status_code == 404
    assert mz.get(f"/exchange/sources/new?entry_id={entry['id']}").status_code == 403
    assert "配置数据源" not in mz.get(f"/catalog/{entry['id']}").text
    auditor = as_user(client, "auditor")
    assert auditor.get("/exchange/sources").status_code == 403
    assert auditor.get("/exchange/subscriptions").status_code == 403
    assert "数据交换" not in auditor.get("/catalog").text
    assert "数据交换" in ga.get("/catalog").text


def test_create_source_test_connection_and_fix(client: TestClient, tmp_path: Path) -> None:
    provider = Provider(tmp_path / "ga.db")
    entry = _entry(client)
    ga = as_user(client, "ga_officer")
    page = ga.get(f"/catalog/{entry['id']}")
    assert f'href="/exchange/sources/new?entry_id={entry["id"]}"' in page.text and "配置数据源" in page.text
    form = ga.get(f"/exchange/sources/new?entry_id={entry['id']}")
    assert form.status_code == 200 and "数据库连接 URL" in form.text and "婚姻状况" in form.text

    # A SQLite URL is the platform admin's: the form comes back with the message and the
    # values, never the password.
    r = post(ga, "/exchange/sources/new", sql_form(entry["id"], provider.url, password="s3cret-pw"))
    assert r.status_code == 422
    assert "只有平台管理员可以配置 SQLite 数据源" in r.text
    assert provider.url in r.text and 'value="hyzk"' in r.text and "s3cret-pw" not in r.text

    # The admin connects it with a wrong table name.
    admin = as_user(client, "admin")
    r = post(admin, "/exchange/sources/new", sql_form(entry["id"], provider.url, table="persons"))
    assert r.status_code == 303, r.text
    source_id = _source_id(r.headers["location"])
    r = post(admin, f"/exchange/sources/{source_id}/test", {}, headers=HTMX)
    assert r.status_code == 200
    assert "连接失败" in r.text and "数据源中没有表或视图：persons" in r.text
    assert "exchange.source_table_missing" in r.text and 'hx-swap-oob="true"' in r.text and "异常" in r.text
    listing = admin.get("/exchange/sources").text
    assert "异常" in listing and "source_table_missing" in listing
    # Again for an existing source: the entry page's link goes to it, and new redirects.
    r = admin.get(f"/exchange/sources/new?entry_id={entry['id']}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/exchange/sources/{source_id}"

    # Fixed on the edit form (the stored password is kept when the field is blank).
    edit = admin.get(f"/exchange/sources/{source_id}/edit")
    assert edit.status_code == 200 and 'value="persons"' in edit.text
    bad = post(admin, f"/exchange/sources/{source_id}/edit", sql_form(entry["id"], "", table="per;son"))
    assert bad.status_code == 422 and "名称无效" in bad.text
    r = post(admin, f"/exchange/sources/{source_id}/edit", sql_form(entry["id"], "", table="person"))
    assert r.status_code == 303, r.text
    r = post(admin, f"/exchange/sources/{source_id}/test", {}, headers=HTMX)
    assert "连接正常" in r.text and "正常" in r.text
    # Without htmx the whole page answers.
    full = post(admin, f"/exchange/sources/{source_id}/test", {})
    assert full.status_code == 200 and "连接正常" in full.text and "<html" in full.text
    # ga_officer (an editor of the provider) may test too; a column renamed away fails.
    r = post(ga, f"/exchange/sources/{source_id}/test", {}, headers=HTMX)
    assert "连接正常" in r.text

    # Disable, enable, delete (confirmed).
    r = post(admin, f"/exchange/sources/{source_id}/enabled", {"enabled": "0"})
    assert r.status_code == 303
    assert "已停用" in admin.get(f"/exchange/sources/{source_id}").text
    r = post(admin, f"/exchange/sources/{source_id}/enabled", {"enabled": "1"})
    assert r.status_code == 303
    r = post(admin, f"/exchange/sources/{source_id}/delete", {})
    assert r.status_code == 422 and "请勾选确认" in r.text
    r = post(admin, f"/exchange/sources/{source_id}/delete", {"confirm": "1"})
    assert r.status_code == 303 and r.headers["location"] == "/exchange/sources"
    assert admin.get(f"/exchange/sources/{source_id}").status_code == 404


def test_file_source_upload(client: TestClient) -> None:
    entry = _entry(client)
    ga = as_user(client, "ga_officer")
    form = ga.get(f"/exchange/sources/new?entry_id={entry['id']}&kind=file")
    assert form.status_code == 200 and "上传的 CSV" in form.text
    r = post(ga, "/exchange/sources/new", {"entry_id": str(entry["id"]), "kind": "file", "key_item": "身份证号"})
    assert r.status_code == 303, r.text
    source_id = _source_id(r.headers["location"])
    page = ga.get(f"/exchange/sources/{source_id}")
    assert "尚未上传数据文件" in page.text and "上传并载入" in page.text

    bad = "身份证号,姓名,婚姻状况\n110101199001010001,张三,已婚\n110101199001010001,李四,未婚\n".encode()
    r = post(ga, f"/exchange/sources/{source_id}/file", {}, files={"file": ("p.csv", bad, "text/csv")})
    assert r.status_code == 422
    assert "未载入任何数据" in r.text and "主键重复" in r.text and "upload-errors" in r.text
    good = "身份证号,姓名,婚姻状况\n110101199001010001,张三,已婚\n110101199001010002,李四,未婚\n".encode()
    r = post(ga, f"/exchange/sources/{source_id}/file", {}, files={"file": ("p.csv", good, "text/csv")})
    assert r.status_code == 303, r.text
    page = ga.get(f"/exchange/sources/{source_id}")
    assert "已载入 2 行数据" in page.text and "2 行" in page.text
    r = post(ga, f"/exchange/sources/{source_id}/file", {}, files={"file": ("p.pdf", b"%PDF", "application/pdf")})
    assert r.status_code == 422 and "只支持 CSV 或 Excel" in r.text


# ---------------------------------------------------------------- subscriptions


def _granted(client: TestClient, provider: Provider) -> str:
    """A published 无条件共享 entry of 公安局 with change tracking, granted to 民政局."""
    entry = _entry(client, share_type="unconditional", share_condition=None)
    _api_source(client, entry["id"], provider)
    r = client.post(
        "/api/v1/sharing/unconditional-grants",
        json={"entry_id": entry["id"], "purpose_kind": "verification"},
        headers=auth(client, "mz_officer"),
    )
    assert r.status_code == 201, r.text
    return str(entry["code"])


def subscribe_form(code: str, **overrides: Any) -> dict[str, Any]:
    form = {
        "entry": code,
        "mode": "webhook",
        "url": "http://127.0.0.1:9/hook",
        "items": "",
        "system": "低保审核系统",
        "operator": "王小明",
        "purpose": "verification",
        "case": "MZ-2026-000777",
    }
    form.update(overrides)
    return form


def test_subscribe_shows_the_secret_once(client: TestClient, tmp_path: Path) -> None:
    code = _granted(client, Provider(tmp_path / "ga.db"))
    mz = as_user(client, "mz_officer")
    page = mz.get("/exchange/subscriptions")
    assert page.status_code == 200 and "新建订阅" in page.text
    assert 'value="示范市民政局"' in page.text and 'value="民政数据管理员"' in page.text  # context defaults

    # Refusals are shown on the form, the values kept.
    r = post(mz, "/exchange/subscriptions", subscribe_form(code, case=""))
    assert r.status_code == 422 and "办件编号" in r.text and 'value="低保审核系统"' in r.text
    r = post(mz, "/exchange/subscriptions", subscribe_form(code, url="ftp://x"))
    assert r.status_code == 422 and "Webhook 地址须为" in r.text
    r = post(mz, "/exchange/subscriptions", subscribe_form("NOPE"))
    assert r.status_code == 422 and "信息资源不存在" in r.text
    ga = as_user(client, "ga_officer")
    r = post(ga, "/exchange/subscriptions", subscribe_form(code))
    assert r.status_code == 403 and "新建订阅" in r.text  # no grant: said on the form

    r = post(mz, "/exchange/subscriptions", subscribe_form(code, operator="王小明 100%"))
    assert r.status_code == 201, r.text
    secret = re.search(r'class="webhook-secret">(whsec_[^<]+)<', r.text)
    assert secret and "只显示这一次" in r.text and r.headers["cache-control"] == "no-store"
    assert "王小明 100%" in r.text
    sub_id = int(re.search(r"订阅第 (\d+) 号", r.text).group(1))  # type: ignore[union-attr]
    # Never again: not on the list, not on its page.
    listing = mz.get("/exchange/subscriptions")
    assert secret.group(1) not in listing.text and f"/exchange/subscriptions/{sub_id}" in listing.text
    assert "推送（Webhook）" in listing.text and "生效" in listing.text
    detail = mz.get(f"/exchange/subscriptions/{sub_id}")
    assert detail.status_code == 200 and secret.group(1) not in detail.text and "死信" in detail.text
    # Another department: 404; the platform admin sees all.
    assert ga.get(f"/exchange/subscriptions/{sub_id}").status_code == 404
    assert f"/exchange/subscriptions/{sub_id}" not in ga.get("/exchange/subscriptions").text
    admin = as_user(client, "admin")
    assert f"/exchange/subscriptions/{sub_id}" in admin.get("/exchange/subscriptions").text
    assert admin.get(f"/exchange/subscriptions/{sub_id}").status_code == 200


def test_pause_resume_replay_and_cancel(client: TestClient, settings: Settings, tmp_path: Path) -> None:
    provider = Provider(tmp_path / "ga.db")
    code = _granted(client, provider)
    mz = as_user(client, "mz_officer")
    r = post(mz, "/exchange/subscriptions", subscribe_form(code, mode="feed", url="", items="身份证号\n婚姻状况"))
    assert r.status_code == 201, r.text
    assert "whsec_" not in r.text and "可按偏移量拉取" in r.text
    sub_id = int(re.search(r"订阅第 (\d+) 号", r.text).group(1))  # type: ignore[union-attr]
    path = f"/exchange/subscriptions/{sub_id}"
    # Changes on the bus: capture starts, three rows are added and captured.
    bus = bus_mod.bus_for(settings)
    delivery.run_once(settings, bus)
    provider.add(3)
    for _ in range(5):
        delivery.run_once(settings, bus)

    r = post(mz, f"{path}/pause", {})
    assert r.status_code == 303
    page = mz.get(path)
    assert "订阅已暂停" in page.text and "已暂停" in page.text and "恢复推送" in page.text
    r = post(mz, f"{path}/resume", {})
    assert r.status_code == 303 and "订阅已恢复" in mz.get(path).text

    r = post(mz, f"{path}/replay", {"offset": str(10**9)})
    assert r.status_code == 422 and "偏移量须在" in r.text
    r = post(mz, f"{path}/replay", {"offset": "abc"})
    assert r.status_code == 422 and "偏移量应为" in r.text
    r = post(mz, f"{path}/replay", {"offset": "2"})
    assert r.status_code == 303
    page = mz.get(path)
    assert "将从偏移量 2 之后重新推送" in page.text
    assert re.search(r'class="sub-position">2<', page.text)

    # Another department may not act on it.
    ga = as_user(client, "ga_officer")
    assert post(ga, f"{path}/pause", {}).status_code == 404

    r = post(mz, f"{path}/cancel", {})
    assert r.status_code == 422 and "请勾选确认" in r.text
    r = post(mz, f"{path}/cancel", {"confirm": "1"})
    assert r.status_code == 303
    page = mz.get(path)
    assert "订阅已取消" in page.text and "已取消" in page.text and "暂停推送" not in page.text
    r = post(mz, f"{path}/pause", {})
    assert r.status_code == 409 and "订阅已取消" in r.text
