"""The remaining sharing pages through the TestClient: inbox, supply–demand docking (需求),
不予共享 coordination cases, the work calendar and the masking rules — roles, forms with
CSRF, errors shown on the form, and never a 500 for bad input."""

from __future__ import annotations

import html
import re
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sharing_helpers import published
from test_pages import csrf_of, login

BIG = "9" * 30  # beyond 64 bits


def as_user(client: TestClient, username: str) -> TestClient:
    browser = TestClient(client.app)
    login(browser, username)
    return browser


def post(browser: TestClient, path: str, data: dict[str, Any]) -> httpx.Response:
    return browser.post(path, data={**data, "csrf_token": csrf_of(browser, "/catalog")}, follow_redirects=False)


def text_of(r: httpx.Response) -> str:
    return html.unescape(r.text)


def new_id(r: httpx.Response, prefix: str) -> int:
    assert r.status_code == 303, r.text
    match = re.fullmatch(prefix + r"/(\d+)", r.headers["location"])
    assert match, r.headers["location"]
    return int(match.group(1))


PAGES = [
    "/sharing/inbox",
    "/sharing/needs",
    "/sharing/needs/new",
    "/sharing/cases",
    "/sharing/admin/calendar",
    "/sharing/admin/masking",
]


def test_anonymous_is_sent_to_login(client: TestClient) -> None:
    for path in PAGES:
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), path
    r = client.get("/sharing/inbox/count")
    assert r.status_code == 200 and r.text == ""  # a fragment never becomes a login page


@pytest.mark.parametrize(
    ("username", "allowed"),
    [
        (
            "admin",
            {"/sharing/inbox", "/sharing/needs", "/sharing/cases", "/sharing/admin/calendar", "/sharing/admin/masking"},
        ),
        ("mz_officer", {"/sharing/inbox", "/sharing/needs", "/sharing/needs/new", "/sharing/cases"}),
        ("ga_admin", {"/sharing/inbox", "/sharing/needs", "/sharing/needs/new", "/sharing/cases"}),
        ("auditor", {"/sharing/inbox"}),
    ],
)
def test_pages_by_role(client: TestClient, username: str, allowed: set[str]) -> None:
    browser = as_user(client, username)
    for path in PAGES:
        r = browser.get(path)
        if path in allowed:
            assert r.status_code == 200, (username, path, r.text[:300])
            assert "<title>" in r.text and "500" not in r.text[:50]
        else:
            assert r.status_code == 403, (username, path, r.status_code)
            assert "无权访问" in r.text


def test_bad_ids_never_500(client: TestClient) -> None:
    entry = published(client, "none")
    admin = as_user(client, "admin")
    mz = as_user(client, "mz_officer")
    for path in (
        f"/sharing/needs/{BIG}",
        "/sharing/needs/0",
        f"/sharing/cases/{BIG}",
        f"/sharing/admin/calendar/{BIG}",
    ):
        assert admin.get(path).status_code == 404, path
    for path in ("/sharing/needs/abc", "/sharing/cases/x1", "/sharing/admin/calendar/20x1"):
        assert admin.get(path).status_code == 404, path
    for query in ("", "?entry_id=abc", f"?entry_id={BIG}", "?entry_id=-1"):
        assert mz.get("/sharing/cases/new" + query).status_code == 404, query
    assert mz.get(f"/sharing/cases/new?entry_id={entry['id']}").status_code == 200
    assert post(mz, f"/sharing/inbox/{BIG}/read", {}).status_code == 404
    assert post(mz, f"/sharing/needs/{BIG}/close", {}).status_code == 404
    assert post(admin, f"/sharing/cases/{BIG}/resolve", {"decision": "upheld", "resolution": "x"}).status_code == 404
    assert post(admin, f"/sharing/admin/calendar/{BIG}/delete", {}).status_code == 404
    # A form posted without its CSRF token is refused.
    r = mz.post("/sharing/needs/new", data={"title": "x"}, follow_redirects=False)
    assert r.status_code == 403


# ---------------------------------------------------------------- needs and the inbox


NEED_FORM = {
    "title": "全市新生儿出生登记信息",
    "description": "用于新生儿落户和医保参保一件事办理",
    "items": "姓名，出生日期\n出生医学证明编号",
    "purpose_kind": "collaboration",
    "purpose": "出生一件事联办",
}


def test_need_posted_routed_answered_and_closed(client: TestClient) -> None:
    mz, admin, ga = (as_user(client, u) for u in ("mz_officer", "admin", "ga_officer"))

    # Missing fields come back on the form, with what was typed.
    r = post(mz, "/sharing/needs/new", {**NEED_FORM, "title": "", "purpose_kind": "nonsense"})
    assert r.status_code == 422 and "请填写需求名称" in text_of(r)
    assert "用于新生儿落户" in text_of(r)
    r = post(mz, "/sharing/needs/new", {**NEED_FORM, "items": " ,，\n"})
    assert r.status_code == 422 and "请列出所需的数据项" in text_of(r)
    assert post(admin, "/sharing/needs/new", NEED_FORM).status_code == 403  # the platform admin posts none

    need_id = new_id(post(mz, "/sharing/needs/new", NEED_FORM), "/sharing/needs")
    page = text_of(mz.get(f"/sharing/needs/{need_id}"))
    assert "全市新生儿出生登记信息" in page and "待分派" in page and "出生医学证明编号" in page
    assert "/route" not in page  # the consumer routes nothing
    assert f"/sharing/needs/{need_id}" in mz.get("/sharing/needs?tab=mine").text
    assert f"/sharing/needs/{need_id}" in admin.get("/sharing/needs?tab=all&status=open").text
    assert f"/sharing/needs/{need_id}" not in admin.get("/sharing/needs?status=closed").text
    assert ga.get(f"/sharing/needs/{need_id}").status_code == 404  # not routed to GA yet

    # The platform admin routes it (a department must be chosen; never the consumer itself).
    page = text_of(admin.get(f"/sharing/needs/{need_id}"))
    assert 'name="department_code"' in page and 'value="GA"' in page and 'value="MZ"' not in page
    r = post(admin, f"/sharing/needs/{need_id}/route", {"department_code": ""})
    assert r.status_code == 422 and "请选择分派给的部门" in text_of(r)
    r = post(admin, f"/sharing/needs/{need_id}/route", {"department_code": "MZ"})
    assert r.status_code == 422 and "不能分派给提出需求的部门本身" in text_of(r)
    r = post(admin, f"/sharing/needs/{need_id}/route", {"department_code": "GA", "reason": "出生登记由公安户籍管理"})
    assert r.status_code == 303
    page = text_of(admin.get(f"/sharing/needs/{need_id}"))
    assert "待部门答复" in page and "示范市公安局" in page and "部门答复截止" in page

    # The routed department learns of it in its inbox, marks it read.
    inbox = text_of(ga.get("/sharing/inbox"))
    assert "数据需求待答复：全市新生儿出生登记信息" in inbox and f'href="/sharing/needs/{need_id}"' in inbox
    assert 'class="inbox-item unread"' in inbox
    count = ga.get("/sharing/inbox/count")
    assert count.status_code == 200 and 'badge-unread">1<' in count.text
    message_id = int(re.findall(r'action="/sharing/inbox/(\d+)/read"', inbox)[0])
    r = post(ga, f"/sharing/inbox/{message_id}/read", {"back": "/sharing/inbox?unread=1"})
    assert r.status_code == 303 and r.headers["location"] == "/sharing/inbox?unread=1"
    assert "没有未读消息" in text_of(ga.get("/sharing/inbox?unread=1"))
    assert "badge-unread" not in ga.get("/sharing/inbox/count").text
    assert "数据需求待答复" in text_of(ga.get("/sharing/inbox"))  # still listed, no longer bold
    assert post(mz, f"/sharing/inbox/{message_id}/read", {}).status_code == 404  # someone else's message
    assert f"/sharing/needs/{need_id}" in ga.get("/sharing/needs?tab=assigned").text

    # The routed department answers: "cannot" needs a reason; a bad entry id is refused on the form.
    page = text_of(ga.get(f"/sharing/needs/{need_id}"))
    assert 'name="answer"' in page and "/route" not in page
    r = post(ga, f"/sharing/needs/{need_id}/answer", {"answer": "cannot", "text": ""})
    assert r.status_code == 422 and "请填写无法提供的理由" in text_of(r)
    r = post(ga, f"/sharing/needs/{need_id}/answer", {"answer": "will_publish", "text": "计划", "entry_id": "abc"})
    assert r.status_code == 422 and "信息资源编号应为数字" in text_of(r)
    r = post(ga, f"/sharing/needs/{need_id}/answer", {"answer": "will_publish", "text": "计划", "entry_id": BIG})
    assert r.status_code == 422 and "不存在" in text_of(r)
    assert post(mz, f"/sharing/needs/{need_id}/answer", {"answer": "cannot", "text": "x"}).status_code == 403
    r = post(ga, f"/sharing/needs/{need_id}/answer", {"answer": "will_publish", "text": "下月编目发布出生登记信息"})
    assert r.status_code == 303
    page = text_of(mz.get(f"/sharing/needs/{need_id}"))
    assert "将编目发布" in page and "下月编目发布出生登记信息" in page
    assert "数据需求已答复" in text_of(mz.get("/sharing/inbox"))

    # The consumer closes it (an optional entry id must be a number).
    r = post(mz, f"/sharing/needs/{need_id}/close", {"action": "close", "entry_id": "x"})
    assert r.status_code == 422 and "信息资源编号应为数字" in text_of(r)
    r = post(mz, f"/sharing/needs/{need_id}/close", {"action": "close", "reason": "已通过其他渠道满足"})
    assert r.status_code == 303
    page = text_of(mz.get(f"/sharing/needs/{need_id}"))
    assert "已关闭" in page and "可执行的操作" not in page
    for label in ("提出需求", "分派", "答复", "关闭", "出生登记由公安户籍管理"):
        assert label in page
    # Closed is final: a late step is refused with the service's message, not a 500.
    r = post(admin, f"/sharing/needs/{need_id}/route", {"department_code": "SJ"})
    assert r.status_code == 409 and "不能执行" in text_of(r)

    # Mark all read.
    assert "unread" in mz.get("/sharing/inbox").text
    r = post(mz, "/sharing/inbox/read-all", {"back": "https://evil.example/"})
    assert r.status_code == 303 and r.headers["location"] == "/sharing/inbox"
    page = text_of(mz.get("/sharing/inbox"))
    assert "已将" in page and 'class="inbox-item unread"' not in page


def test_routed_department_links_its_entry(client: TestClient) -> None:
    mz, admin, ga = (as_user(client, u) for u in ("mz_officer", "admin", "ga_officer"))
    need_id = new_id(post(mz, "/sharing/needs/new", NEED_FORM), "/sharing/needs")
    assert post(admin, f"/sharing/needs/{need_id}/route", {"department_code": "GA"}).status_code == 303
    r = post(ga, f"/sharing/needs/{need_id}/answer", {"answer": "will_publish", "text": "编目中"})
    assert r.status_code == 303
    page = text_of(ga.get(f"/sharing/needs/{need_id}"))
    assert 'name="action" value="link"' in page
    r = post(ga, f"/sharing/needs/{need_id}/close", {"action": "link", "entry_id": ""})
    assert r.status_code == 422 and "请关联本部门已发布的信息资源" in text_of(r)
    entry = published(client)
    r = post(ga, f"/sharing/needs/{need_id}/close", {"action": "link", "entry_id": str(entry["id"])})
    assert r.status_code == 303
    page = text_of(mz.get(f"/sharing/needs/{need_id}"))
    assert "已关闭" in page and f'href="/catalog/{entry["id"]}"' in page


# ---------------------------------------------------------------- 不予共享 coordination cases


def test_case_opened_and_resolved(client: TestClient) -> None:
    entry = published(client, "none")  # basis: 涉及国家秘密
    mz, admin, ga = (as_user(client, u) for u in ("mz_officer", "admin", "ga_officer"))

    form = text_of(mz.get(f"/sharing/cases/new?entry_id={entry['id']}"))
    assert entry["name"] in form and 'name="items" value="身份证号"' in form and 'name="duty"' in form
    assert "涉及国家秘密" not in form
    assert ga.get(f"/sharing/cases/new?entry_id={entry['id']}").status_code == 403  # its own entry
    assert admin.get(f"/sharing/cases/new?entry_id={entry['id']}").status_code == 403
    shared = published(client)
    r = mz.get(f"/sharing/cases/new?entry_id={shared['id']}")
    assert r.status_code == 409 and "直接申请" in text_of(r)

    r = post(mz, "/sharing/cases/new", {"entry_id": str(entry["id"]), "duty": "", "legal_basis": "x"})
    assert r.status_code == 422 and "请填写履职需要" in text_of(r)
    r = post(
        mz,
        "/sharing/cases/new",
        {"entry_id": str(entry["id"]), "duty": "核查低保对象", "legal_basis": "x", "items": ["不存在的项"]},
    )
    assert r.status_code == 422 and "信息项不属于该信息资源" in text_of(r)
    data = {
        "entry_id": str(entry["id"]),
        "duty": "核查低保对象家庭成员户籍",
        "legal_basis": "《社会救助暂行办法》第十一条",
        "items": ["身份证号", "姓名"],
    }
    case_id = new_id(post(mz, "/sharing/cases/new", data), "/sharing/cases")
    r = post(mz, "/sharing/cases/new", data)
    assert r.status_code == 409 and "待协调事项" in text_of(r)

    page = text_of(mz.get(f"/sharing/cases/{case_id}"))
    assert "核查低保对象家庭成员户籍" in page and "待协调" in page and "身份证号" in page
    assert "不予共享依据" not in page and "涉及国家秘密" not in page
    assert "/resolve" not in page
    assert f"/sharing/cases/{case_id}" in mz.get("/sharing/cases").text
    assert f"/sharing/cases/{case_id}" in admin.get("/sharing/cases?status=open").text
    assert f"/sharing/cases/{case_id}" not in admin.get("/sharing/cases?status=upheld").text
    assert "不予共享协调申请" in text_of(admin.get("/sharing/inbox"))

    page = text_of(admin.get(f"/sharing/cases/{case_id}"))
    assert "不予共享依据" in page and "涉及国家秘密" in page and "/resolve" in page
    assert post(mz, f"/sharing/cases/{case_id}/resolve", {"decision": "upheld", "resolution": "x"}).status_code == 403
    r = post(admin, f"/sharing/cases/{case_id}/resolve", {"decision": "upheld", "resolution": ""})
    assert r.status_code == 422 and "请填写理由" in text_of(r)
    r = post(admin, f"/sharing/cases/{case_id}/resolve", {"decision": "maybe", "resolution": "x"})
    assert r.status_code == 422 and "协调结论须为" in text_of(r)
    r = post(admin, f"/sharing/cases/{case_id}/resolve", {"decision": "upheld", "resolution": "涉密，维持不予共享"})
    assert r.status_code == 303
    page = text_of(mz.get(f"/sharing/cases/{case_id}"))
    assert "维持不予共享" in page and "涉密，维持不予共享" in page and "涉及国家秘密" not in page
    assert "不予共享协调结果" in text_of(mz.get("/sharing/inbox"))
    r = post(admin, f"/sharing/cases/{case_id}/resolve", {"decision": "referred", "resolution": "again"})
    assert r.status_code == 409 and "已办结" in text_of(r)


# ---------------------------------------------------------------- work calendar


CALENDAR_2031 = """2031-01-01 休 元旦
2031-01-22 至 2031-01-28 休 春节
2031-02-08 班 春节调休
"""


def test_calendar_import_and_delete(client: TestClient) -> None:
    admin = as_user(client, "admin")
    page = text_of(admin.get("/sharing/admin/calendar"))
    assert "chinesecalendar" in page and "导入某年节假日安排" in page

    # Errors shown on the form, with what was typed.
    r = post(
        admin,
        "/sharing/admin/calendar",
        {"year": "2031", "notice": "国办发明电〔2030〕1号", "content": "2031-01-01 休 元旦\n明天放假"},
    )
    assert r.status_code == 422
    assert "第 2 行无法识别" in text_of(r) and "明天放假" in text_of(r)
    r = post(admin, "/sharing/admin/calendar", {"year": "二〇三一", "notice": "n", "content": CALENDAR_2031})
    assert r.status_code == 422 and "年份应为" in text_of(r)
    r = post(admin, "/sharing/admin/calendar", {"year": "2031", "notice": "", "content": CALENDAR_2031})
    assert r.status_code == 422 and "请填写通知文号或标题" in text_of(r)
    r = post(admin, "/sharing/admin/calendar", {"year": "2031", "notice": "n", "content": "2031-01-04 班 周六"})
    assert r.status_code == 422 and "至少应有一个放假日" in text_of(r)
    r = post(admin, "/sharing/admin/calendar", {"year": "2031", "notice": "n", "content": "2031-01-06 班 周一"})
    assert r.status_code == 422 and "无需列为调休上班" in text_of(r)
    assert "2031 年" not in text_of(admin.get("/sharing/admin/calendar"))
    assert post(as_user(client, "mz_admin"), "/sharing/admin/calendar", {"year": "2031"}).status_code == 403

    r = post(
        admin, "/sharing/admin/calendar", {"year": "2031", "notice": "国办发明电〔2030〕1号", "content": CALENDAR_2031}
    )
    assert r.status_code == 303 and r.headers["location"] == "/sharing/admin/calendar/2031"
    page = text_of(admin.get("/sharing/admin/calendar/2031"))
    assert "放假 8 天、调休上班 1 天" in page and "重算了 0 个在办申请的截止日期" in page
    assert "2031-02-08" in page and "春节调休" in page and "国办发明电〔2030〕1号" in page
    listing = text_of(admin.get("/sharing/admin/calendar"))
    assert 'data-year="2031"' in listing and "平台导入" in listing and "admin" in listing

    r = post(admin, "/sharing/admin/calendar/2031/delete", {})
    assert r.status_code == 303
    listing = text_of(admin.get("/sharing/admin/calendar"))
    assert "已删除平台导入的 2031 年工作日历" in listing and 'data-year="2031"' not in listing
    assert admin.get("/sharing/admin/calendar/2031").status_code == 404


# ---------------------------------------------------------------- masking rules


def masking_form(**changes: dict[str, str]) -> dict[str, str]:
    form: dict[str, str] = {}
    for kind in ("id_card", "phone", "name", "address", "text", "bank_card", "email"):
        rule = changes.get(kind, {"mode": "default"})
        form[f"mode_{kind}"] = rule["mode"]
        form[f"head_{kind}"] = rule.get("head", "")
        form[f"tail_{kind}"] = rule.get("tail", "")
    return form


def test_masking_rules_changed_through_the_form(client: TestClient) -> None:
    admin = as_user(client, "admin")
    page = text_of(admin.get("/sharing/admin/masking"))
    assert "身份证号" in page and "110101********1234" in page and "138****5678" in page

    r = post(admin, "/sharing/admin/masking", masking_form(phone={"mode": "keep", "head": "0", "tail": "0"}))
    assert r.status_code == 422 and "电话号码：保留位数须为" in text_of(r)
    r = post(admin, "/sharing/admin/masking", masking_form(phone={"mode": "keep", "head": "x", "tail": "2"}))
    assert r.status_code == 422 and "电话号码：保留前几位应为" in text_of(r)
    r = post(admin, "/sharing/admin/masking", masking_form(phone={"mode": "sometimes"}))
    assert r.status_code == 422 and "请选择脱敏方式" in text_of(r)
    assert post(as_user(client, "mz_admin"), "/sharing/admin/masking", masking_form()).status_code == 403

    r = post(
        admin,
        "/sharing/admin/masking",
        masking_form(phone={"mode": "keep", "head": "2", "tail": "2"}, email={"mode": "full"}),
    )
    assert r.status_code == 303
    page = text_of(admin.get("/sharing/admin/masking"))
    assert "脱敏规则已保存" in page and "13****78" in page and "138****5678" not in page
    assert "保留前2位和后2位" in page
    assert 'name="head_phone" class="num-input" type="number" min="0" max="8" inputmode="numeric" value="2"' in page

    r = post(admin, "/sharing/admin/masking", masking_form())  # back to the built-in rules
    assert r.status_code == 303
    assert "138****5678" in text_of(admin.get("/sharing/admin/masking"))


# ---------------------------------------------------------------- board sections (for the lead's board)


def test_board_sections(client: TestClient, settings: Any) -> None:
    from types import SimpleNamespace

    from sharing_helpers import who

    from datatong.db import session_scope
    from datatong.errors import Forbidden
    from datatong.sharing.needs_pages import board_context
    from datatong.web.pages import templates

    mz, admin = as_user(client, "mz_officer"), as_user(client, "admin")
    need_id = new_id(post(mz, "/sharing/needs/new", NEED_FORM), "/sharing/needs")
    entry = published(client, "none")
    data = {"entry_id": str(entry["id"]), "duty": "核查", "legal_basis": "依据"}
    case_id = new_id(post(mz, "/sharing/cases/new", data), "/sharing/cases")
    assert admin.get("/sharing/needs").status_code == 200
    with session_scope(settings.database_url) as s:
        context = board_context(SimpleNamespace(principal=who(settings, "admin"), session=s))  # type: ignore[arg-type]
        needs_html = templates.get_template("sharing/needs/_board.html").render(context)
        cases_html = templates.get_template("sharing/cases/_board.html").render(context)
        with pytest.raises(Forbidden):
            board_context(SimpleNamespace(principal=who(settings, "mz_officer"), session=s))  # type: ignore[arg-type]
    assert f"/sharing/needs/{need_id}" in needs_html and "待分派" in needs_html
    assert f"/sharing/cases/{case_id}" in cases_html
