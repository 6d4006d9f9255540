"""The Chinese web UI through the TestClient: login, CSRF, catalog pages, admin pages."""

from __future__ import annotations

import re
from typing import Any

import httpx
from conftest import PASSWORD, auth, create_entry, entry_body
from fastapi.testclient import TestClient

CSRF_RE = re.compile(r'name="csrf-token" content="([^"]+)"')


def csrf_of(client: TestClient, path: str = "/login") -> str:
    match = CSRF_RE.search(client.get(path).text)
    assert match, "every page carries the CSRF meta tag"
    return match.group(1)


def found(pattern: str, text: str, group: int = 0) -> str:
    match = re.search(pattern, text, re.S)
    assert match, pattern
    return match.group(group)


def login(client: TestClient, username: str) -> None:
    r = client.post(
        "/login",
        data={
            "username": username,
            "password": PASSWORD,
            "next": "/catalog",
            "csrf_token": csrf_of(client),
        },
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text


def entry_form(**overrides: Any) -> dict[str, Any]:
    """A valid 编目 form as a browser posts it (positional item columns)."""
    form: dict[str, Any] = {
        "name": "流动人口居住登记信息",
        "class_code": "101",
        "summary": "流动人口在本市的居住登记信息",
        "keywords": "人口,居住证",
        "format_category": "database",
        "format_type": "PostgreSQL table",
        "share_type": "unconditional",
        "share_condition": "",
        "no_share_basis": "",
        "share_method": "platform",
        "share_subtype": "interface",
        "update_cycle": "daily",
        "item_name": ["身份证号", "居住地址"],
        "item_code": ["SFZH", "JZDZ"],
        "item_data_type": ["C", "C"],
        "item_length": ["18", "200"],
        "item_sensitivity": ["personal", "internal"],
        "item_is_authoritative": ["1", "0"],
        "item_description": ["", ""],
        "action": "save",
    }
    form.update(overrides)
    return form


def post_form(client: TestClient, path: str, data: dict[str, Any], token_from: str | None = None) -> httpx.Response:
    data = {**data, "csrf_token": csrf_of(client, token_from or path)}
    return client.post(path, data=data, follow_redirects=False)


# ---------------------------------------------------------------- login and CSRF


def test_login_flow(client: TestClient) -> None:
    r = client.get("/login")
    assert r.status_code == 200 and "登录数据通" in r.text
    token = csrf_of(client)
    r = client.post("/login", data={"username": "ga_officer", "password": "wrong", "csrf_token": token})
    assert r.status_code == 400
    assert "用户名或密码错误" in r.text and 'value="ga_officer"' in r.text
    r = client.post(
        "/login",
        data={
            "username": "ga_officer",
            "password": PASSWORD,
            "csrf_token": token,
            "next": "/catalog/new",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/catalog/new"
    page = client.get("/catalog").text
    assert "公安数据管理员" in page and "数据管理员 · 示范市公安局" in page and "新建信息资源" in page
    assert "用户管理" not in page  # a data officer manages nobody
    r = client.post("/logout", data={"csrf_token": csrf_of(client, "/catalog")}, follow_redirects=False)
    assert r.status_code == 303
    assert "登录</a>" in client.get("/catalog").text


def test_login_refuses_offsite_next(client: TestClient) -> None:
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        r = client.post(
            "/login",
            data={
                "username": "ga_officer",
                "password": PASSWORD,
                "next": target,
                "csrf_token": csrf_of(client),
            },
            follow_redirects=False,
        )
        assert r.headers["location"] == "/catalog", target
        client.post("/logout", data={"csrf_token": csrf_of(client, "/catalog")})


def test_post_without_csrf_token_is_refused(client: TestClient) -> None:
    login(client, "ga_officer")
    r = client.post("/catalog/new", data=entry_form(), follow_redirects=False)
    assert r.status_code == 403
    assert "text/html" in r.headers["content-type"] and "请刷新页面后重试" in r.text
    r = client.post("/catalog/new", data={**entry_form(), "csrf_token": "forged"})
    assert r.status_code == 403
    r = client.post("/login", data={"username": "ga_officer", "password": PASSWORD})
    assert r.status_code == 403
    # htmx sends the token in a header instead of a field
    token = csrf_of(client, "/catalog")
    r = client.post("/catalog/new", data=entry_form(), headers={"X-CSRF-Token": token}, follow_redirects=False)
    assert r.status_code == 303


# ---------------------------------------------------------------- catalog pages


def test_search_and_entry_pages_render_chinese(client: TestClient) -> None:
    entry = create_entry(client, publish=True, is_open=True)
    create_entry(
        client,
        username="mz_officer",
        publish=True,
        is_open=True,
        name="婚姻登记信息",
        class_code="101",
        summary="结婚登记、离婚登记信息",
        keywords="婚姻",
        share_type="unconditional",
        share_condition=None,
    )
    r = client.get("/catalog", params={"q": "人口"})
    assert r.status_code == 200
    assert "户籍人口基本信息" in r.text and "婚姻登记信息" not in r.text
    assert "共 <strong>1</strong> 条" in r.text and "有条件共享" in r.text
    page = client.get("/catalog").text
    assert "示范市公安局" in page and "示范市民政局" in page  # provider facet
    assert 'hx-get="/catalog"' in page and 'hx-push-url="true"' in page
    # A facet link narrows the results; the selected facet links back to all.
    r = client.get("/catalog", params={"provider": "MZ"})
    assert "婚姻登记信息" in r.text and "户籍人口基本信息" not in r.text and "清除全部筛选" in r.text
    # htmx asks for the results only
    r = client.get("/catalog", params={"q": "婚姻"}, headers={"HX-Request": "true"})
    assert "<html" not in r.text and "婚姻登记信息" in r.text
    r = client.get(f"/catalog/{entry['id']}")
    assert r.status_code == 200
    for text in (
        "基本信息",
        "格式",
        "共享属性",
        "开放属性",
        "更新与发布",
        "元数据",
        "信息项",
        "身份证号",
        "字符型",
        "个人信息",
        "仅用于政务服务中的身份核验",
        entry["code"],
    ):
        assert text in r.text, text
    assert "版本历史" in r.text and "登录</a>后可查看版本历史" in r.text


def test_search_pages_with_next_link(client: TestClient) -> None:
    for i in range(22):
        create_entry(client, publish=False, name=f"人口专题数据{i:02d}")
    login(client, "ga_officer")
    page = client.get("/catalog", params={"sort": "name"}).text
    assert "共 <strong>22</strong> 条" in page and "下一页" in page
    next_url = found(r'href="([^"]+)" rel="next"', page, 1).replace("&amp;", "&")
    second = client.get(next_url).text
    assert "人口专题数据21" in second and "人口专题数据00" not in second and "下一页" not in second
    assert "发布待审核" not in second and "草稿" in second  # status badge for unpublished entries
    r = client.get("/catalog", params={"cursor": "garbage"})
    assert r.status_code == 200 and "翻页游标无效" in r.text


def test_inline_error_for_conditional_share_without_condition(client: TestClient) -> None:
    login(client, "ga_officer")
    form = entry_form(
        share_type="conditional", share_condition="", item_length=["18", ""]
    )  # 居住地址 is 字符型 and needs a length
    r = post_form(client, "/catalog/new", form)
    assert r.status_code == 422
    html = r.text
    message = "有条件共享的信息资源必须注明共享条件"
    assert message in html
    # the message sits in the share_condition field's block, right after its textarea
    block = found(r'<textarea id="f-share_condition".*?</div>', html)
    assert message in block and 'aria-invalid="true"' in block
    assert "必须填写长度" in found(r'id="f-items-1-length".*?</td>', html)
    assert 'value="流动人口居住登记信息"' in html and 'value="居住地址"' in html  # values kept
    assert 'id="error-summary"' in html


def test_form_type_errors_are_inline(client: TestClient) -> None:
    login(client, "ga_officer")
    r = post_form(client, "/catalog/new", entry_form(item_length=["十八", "200"], release_date="明天"))
    assert r.status_code == 422
    assert "请填写整数" in r.text and "日期格式应为" in r.text


def test_add_and_remove_item_rows_without_js(client: TestClient) -> None:
    login(client, "ga_officer")
    r = post_form(client, "/catalog/new", entry_form(action="add_item"))
    assert r.status_code == 200 and r.text.count('name="item_name"') == 2 + 3 + 1  # +1: <template>
    r = post_form(client, "/catalog/new", entry_form(remove_item="0"))
    assert r.status_code == 200 and 'value="身份证号"' not in r.text and 'value="居住地址"' in r.text


def test_create_edit_and_history_through_forms(client: TestClient) -> None:
    login(client, "ga_officer")
    r = post_form(client, "/catalog/new", entry_form())
    assert r.status_code == 303
    url = r.headers["location"]
    assert re.fullmatch(r"/catalog/\d+", url)
    page = client.get(url).text
    assert "已保存" in page and "草稿" in page and "提交审核" in page and "编辑" in page
    edit = f"{url}/edit"
    r = post_form(client, edit, entry_form(summary="流动人口居住登记及居住证信息"))
    assert r.status_code == 422 and "请填写修改原因" in r.text
    r = post_form(
        client,
        edit,
        entry_form(
            summary="流动人口居住登记及居住证信息",
            reason="增加居住证内容",
            item_name=["身份证号", "现居住地址"],
        ),
    )
    assert r.status_code == 303
    page = client.get(url).text
    history = page[page.index('id="history"') :]
    assert "版本 2" in history and "增加居住证内容" in history
    assert "流动人口居住登记及居住证信息" in history and "摘要" in history
    assert "新增" in history and "现居住地址" in history and "删除" in history
    r = post_form(
        client,
        edit,
        entry_form(
            summary="流动人口居住登记及居住证信息",
            reason="再存一次",
            item_name=["身份证号", "现居住地址"],
        ),
    )
    assert r.status_code == 422 and "没有任何修改" in r.text


def test_life_cycle_buttons_and_review_queue(client: TestClient) -> None:
    entry = create_entry(client)
    login(client, "ga_officer")
    url = f"/catalog/{entry['id']}"
    r = post_form(client, f"{url}/submit", {}, token_from=url)
    assert r.status_code == 303
    assert "发布待审核" in client.get(url).text
    client.post("/logout", data={"csrf_token": csrf_of(client, "/catalog")})
    login(client, "admin")
    queue = client.get("/review").text
    assert entry["name"] in queue and "发布审核" in queue
    r = post_form(
        client,
        f"{url}/review",
        {"decision": "reject", "reason": "", "back": "/review"},
        token_from="/review",
    )
    assert r.status_code == 422 and "请填写理由" in r.text
    r = post_form(client, f"{url}/review", {"decision": "approve", "back": "/review"}, token_from="/review")
    assert r.status_code == 303 and r.headers["location"] == "/review"
    page = client.get(url).text
    assert "已发布" in page and "审核通过并发布" in page


def test_revoke_needs_reason_inline(client: TestClient) -> None:
    entry = create_entry(client, publish=True)
    login(client, "ga_officer")
    url = f"/catalog/{entry['id']}"
    r = post_form(client, f"{url}/revoke", {"reason": " "}, token_from=url)
    assert r.status_code == 422 and "请填写理由" in r.text and "申请撤销" in r.text


# ---------------------------------------------------------------- who may open what


def test_anonymous_is_sent_to_login(client: TestClient) -> None:
    r = client.get("/catalog/new", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/catalog/new"
    r = client.get("/admin/users", follow_redirects=False)
    assert r.headers["location"] == "/login?next=/admin/users"
    assert client.get("/", follow_redirects=False).headers["location"] == "/catalog"
    # A form posted after the session ended leads to login, then back to the form's page.
    r = client.post(
        "/catalog/1/submit",
        data={"csrf_token": csrf_of(client, "/catalog")},
        headers={"referer": "http://testserver/catalog/1?x=1"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/catalog/1%3Fx%3D1"


def test_auditor_cannot_open_new_entry_form(client: TestClient) -> None:
    login(client, "auditor")
    r = client.get("/catalog/new")
    assert r.status_code == 403
    assert "text/html" in r.headers["content-type"] and "无权访问" in r.text
    assert "只有数据管理员、部门管理员或平台管理员可以编目" in r.text
    assert client.get("/review").status_code == 403
    assert client.get("/admin/users").status_code == 403


def test_other_departments_entry_cannot_be_edited(client: TestClient) -> None:
    entry = create_entry(client, publish=True)
    login(client, "mz_officer")
    page = client.get(f"/catalog/{entry['id']}").text
    assert "编辑</a>" not in page and "申请撤销" not in page
    assert client.get(f"/catalog/{entry['id']}/edit").status_code == 403
    draft = create_entry(client, name="公安内部草稿")
    assert client.get(f"/catalog/{draft['id']}").status_code == 404  # not even its existence


def test_dept_admin_sees_only_own_users(client: TestClient) -> None:
    login(client, "mz_admin")
    page = client.get("/admin/users").text
    assert "民政数据管理员" in page and "mz_officer" in page
    assert "ga_officer" not in page and "公安数据管理员" not in page and "平台管理员</th>" not in page
    ga_officer = client.get("/api/v1/users", headers=auth(client, "admin")).json()
    ga_id = next(u["id"] for u in ga_officer if u["username"] == "ga_officer")
    r = post_form(client, f"/admin/users/{ga_id}/active", {"active": "0"}, token_from="/admin/users")
    assert r.status_code == 403


def test_user_admin_forms(client: TestClient) -> None:
    login(client, "mz_admin")
    r = post_form(
        client,
        "/admin/users",
        {
            "username": "mz_new",
            "display_name": "民政新人",
            "password": "short",
            "role": "data_officer",
        },
    )
    assert r.status_code == 422 and "密码至少 8 位" in r.text and 'value="mz_new"' in r.text
    assert 'value="short"' not in r.text
    r = post_form(
        client,
        "/admin/users",
        {
            "username": "mz_new",
            "display_name": "民政新人",
            "password": PASSWORD,
            "role": "data_officer",
        },
    )
    assert r.status_code == 303
    page = client.get("/admin/users").text
    assert "民政新人" in page
    user_id = int(found(r'id="user-(\d+)">\s*<th scope="row">民政新人', page, 1))
    r = post_form(client, f"/admin/users/{user_id}/active", {"active": "0"}, token_from="/admin/users")
    assert r.status_code == 303
    assert "已停用" in client.get("/admin/users").text
    r = post_form(client, f"/admin/users/{user_id}/password", {"password": "abc"}, token_from="/admin/users")
    assert r.status_code == 422 and "密码至少 8 位" in r.text


def test_departments_tree_and_forms(client: TestClient) -> None:
    login(client, "admin")
    page = client.get("/admin/departments").text
    assert "示范市人民政府" in page and "depth-1" in page and "新建部门" in page
    r = post_form(
        client,
        "/admin/departments",
        {"code": "WJW", "name": "", "level": "city", "parent_code": "SHI"},
    )
    assert r.status_code == 422 and "请填写部门名称" in r.text and 'value="WJW"' in r.text
    r = post_form(
        client,
        "/admin/departments",
        {"code": "WJW", "name": "示范市卫生健康委员会", "level": "city", "parent_code": "SHI"},
    )
    assert r.status_code == 303 and "示范市卫生健康委员会" in client.get("/admin/departments").text
    client.post("/logout", data={"csrf_token": csrf_of(client, "/catalog")})
    login(client, "mz_admin")
    page = client.get("/admin/departments").text
    assert "新建部门" not in page
    mz_id = client.get("/api/v1/me", headers=auth(client, "mz_admin")).json()["department_id"]
    assert f"/admin/departments/{mz_id}/edit" in page and page.count("编辑</a>") == 1
    edit = f"/admin/departments/{mz_id}/edit"
    r = post_form(client, edit, {"name": "示范市民政局", "short_name": "市民政局", "contact": "0000-12345"})
    assert r.status_code == 303
    r = post_form(
        client,
        "/admin/departments",
        {"code": "X1", "name": "某部门", "level": "city"},
        token_from="/admin/departments",
    )
    assert r.status_code == 403


def test_no_share_basis_shown_only_to_provider_and_operator(client: TestClient) -> None:
    basis = "《中华人民共和国反恐怖主义法》第四十八条"
    entry = create_entry(
        client,
        publish=True,
        name="涉恐人员名单",
        share_type="none",
        share_condition=None,
        no_share_basis=basis,
        share_method=None,
        share_subtype=None,
    )
    changed = {**entry_body(), "name": "涉恐人员名单", "share_type": "none", "share_condition": None}
    changed.update(no_share_basis=basis + "及第四十九条", share_method=None, share_subtype=None, reason="补充依据")
    r = client.put(f"/api/v1/catalog/entries/{entry['id']}", json=changed, headers=auth(client, "ga_officer"))
    assert r.status_code == 200, r.text
    url = f"/catalog/{entry['id']}"
    login(client, "mz_officer")
    page = client.get(url).text
    assert basis not in page and "仅提供方和平台管理员可见" in page
    client.post("/logout", data={"csrf_token": csrf_of(client, "/catalog")})
    login(client, "ga_officer")
    page = client.get(url).text
    assert basis in page and basis + "及第四十九条" in page
