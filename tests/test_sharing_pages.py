"""The sharing pages through the TestClient: apply, queues, one application and its
actions by role and status, grants, the unconditional button, the platform admin's board."""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from conftest import auth, create_entry
from fastapi.testclient import TestClient
from sharing_helpers import published
from test_pages import csrf_of, login

from datatong.sharing.models import COMMITMENT_VERSION

TODAY = date.today()


def as_user(client: TestClient, username: str) -> TestClient:
    """A browser of its own, signed in as ``username``."""
    browser = TestClient(client.app)
    login(browser, username)
    return browser


def post(browser: TestClient, path: str, data: dict[str, Any]) -> httpx.Response:
    return browser.post(path, data={**data, "csrf_token": csrf_of(browser, "/catalog")}, follow_redirects=False)


def apply_form(entry_id: int, **overrides: Any) -> dict[str, Any]:
    form: dict[str, Any] = {
        "entry_id": str(entry_id),
        "items": ["身份证号", "姓名"],
        "purpose_kind": "verification",
        "purpose": "最低生活保障资格核验",
        "legal_basis": "《社会救助暂行办法》第十一条",
        "period_start": TODAY.isoformat(),
        "period_end": (TODAY + timedelta(days=365)).isoformat(),
        "rows_per_day": "1000",
        "calls_per_minute": "60",
        "system_name": "低保审核系统",
        "client_id": "",
        "accept_commitment": "1",
        "action": "submit",
    }
    form.update(overrides)
    return {k: v for k, v in form.items() if v is not None}


def api_app(client: TestClient, app_id: int, username: str = "mz_officer") -> dict[str, Any]:
    r = client.get(f"/api/v1/sharing/applications/{app_id}", headers=auth(client, username))
    assert r.status_code == 200, r.text
    return dict(r.json())


def filed(client: TestClient, mz: TestClient, **overrides: Any) -> int:
    entry = published(client)
    r = post(mz, "/sharing/apply", apply_form(entry["id"], **overrides))
    assert r.status_code == 303, r.text
    match = re.fullmatch(r"/sharing/applications/(\d+)", r.headers["location"])
    assert match
    return int(match.group(1))


# ---------------------------------------------------------------- apply


def test_apply_form_submits_and_shows_due_date(client: TestClient) -> None:
    entry = published(client)
    mz = as_user(client, "mz_officer")
    page = mz.get(f"/catalog/{entry['id']}")
    assert f'href="/sharing/apply?entry_id={entry["id"]}"' in page.text and "申请共享" in page.text
    r = mz.get(f"/sharing/apply?entry_id={entry['id']}")
    assert r.status_code == 200
    assert "身份证号" in r.text and "个人信息" in r.text  # items with their sensitivity
    assert "数据安全承诺" in r.text and COMMITMENT_VERSION in r.text
    assert "行政依据" in r.text and "民政业务系统" in r.text  # purposes, the department's systems
    r = post(mz, "/sharing/apply", apply_form(entry["id"], client_id="dt_mz_system", system_name=""))
    assert r.status_code == 303
    page = mz.get(r.headers["location"])
    assert page.status_code == 200
    assert "待提供方答复" in page.text and "提供方答复截止" in page.text
    app_id = int(r.headers["location"].rsplit("/", 1)[1])
    data = api_app(client, app_id)
    assert data["status"] == "awaiting_provider" and data["due_at"] in page.text
    assert data["system_name"] == "民政业务系统" and data["commitment_version"] == COMMITMENT_VERSION
    assert "民政数据管理员" in page.text  # who signed the commitment


def test_save_draft_then_submit_from_the_application_page(client: TestClient) -> None:
    mz = as_user(client, "mz_officer")
    app_id = filed(client, mz, action="draft", accept_commitment=None)
    page = mz.get(f"/sharing/applications/{app_id}")
    assert "草稿" in page.text and "提交后开始计算" in page.text
    assert f'action="/sharing/applications/{app_id}/submit"' in page.text
    r = post(mz, f"/sharing/applications/{app_id}/submit", {})
    assert r.status_code == 409 or r.status_code == 422
    assert "提交申请须签署数据安全承诺" in r.text
    r = post(mz, f"/sharing/applications/{app_id}/submit", {"accept_commitment": "1"})
    assert r.status_code == 303
    assert api_app(client, app_id)["status"] == "awaiting_provider"


def test_apply_form_errors_are_shown_in_chinese(client: TestClient) -> None:
    entry = published(client)
    mz = as_user(client, "mz_officer")
    r = post(mz, "/sharing/apply", apply_form(entry["id"], items=None))
    assert r.status_code == 422 and "请选择所需信息项" in r.text and 'id="error-summary"' in r.text
    r = post(mz, "/sharing/apply", apply_form(entry["id"], accept_commitment=None))
    assert r.status_code == 422 and "提交申请须签署数据安全承诺" in r.text
    # The refused submission left no draft behind; the typed values are shown again.
    assert 'value="低保审核系统"' in r.text
    mine = client.get("/api/v1/sharing/applications", headers=auth(client, "mz_officer")).json()
    assert mine == []
    r = post(mz, "/sharing/apply", apply_form(entry["id"], period_end="31/12/2030", rows_per_day="很多"))
    assert r.status_code == 422 and "日期格式应为" in r.text and "请填写整数" in r.text
    r = post(mz, "/sharing/apply", apply_form(entry["id"], rows_per_day="0"))
    assert r.status_code == 422 and "预计数据量须为正数" in r.text
    r = post(mz, "/sharing/apply", apply_form(entry["id"], purpose_kind="", legal_basis=""))
    assert r.status_code == 422 and "用途须为" in r.text
    r = post(mz, "/sharing/apply", apply_form(entry["id"], legal_basis=""))
    assert r.status_code == 422 and "请填写依据" in r.text
    r = post(mz, "/sharing/apply", apply_form(entry["id"], items=["身份证号", "不存在的项"]))
    assert r.status_code == 422 and "信息项不属于该信息资源" in r.text
    r = post(mz, "/sharing/apply", apply_form(entry["id"], client_id="nope", system_name=""))
    assert r.status_code == 422 and "本部门没有应用系统" in r.text
    r = post(mz, "/sharing/apply", apply_form(entry["id"], system_name="系" * 201))
    assert r.status_code == 422 and "不能超过 200 个字符" in r.text
    r = post(mz, "/sharing/apply", apply_form(entry["id"], period_end=(TODAY - timedelta(days=400)).isoformat()))
    assert r.status_code == 422 and "结束日期不能早于开始日期" in r.text


def test_apply_is_refused_to_the_wrong_callers_and_entries(client: TestClient) -> None:
    entry = published(client)
    assert client.get(f"/sharing/apply?entry_id={entry['id']}", follow_redirects=False).status_code == 303  # login
    ga = as_user(client, "ga_officer")
    r = ga.get(f"/sharing/apply?entry_id={entry['id']}")
    assert r.status_code == 403 and "本部门的信息资源无需申请共享" in r.text
    assert as_user(client, "auditor").get(f"/sharing/apply?entry_id={entry['id']}").status_code == 403
    assert as_user(client, "admin").get(f"/sharing/apply?entry_id={entry['id']}").status_code == 403
    mz = as_user(client, "mz_officer")
    free = published(client, "unconditional")
    r = mz.get(f"/sharing/apply?entry_id={free['id']}")
    assert r.status_code == 409 and "无条件共享" in r.text
    closed = published(client, "none")
    r = mz.get(f"/sharing/apply?entry_id={closed['id']}")
    assert r.status_code == 409 and "不予共享" in r.text
    assert mz.get("/sharing/apply?entry_id=abc").status_code == 404
    assert mz.get("/sharing/apply?entry_id=999999").status_code == 404
    draft_entry = create_entry(client, name="未发布的信息资源")
    assert mz.get(f"/sharing/apply?entry_id={draft_entry['id']}").status_code == 404
    # The form posted to an entry that needs no application: the service's refusal.
    r = post(mz, "/sharing/apply", apply_form(free["id"]))
    assert r.status_code == 409 and "无条件共享" in r.text


# ---------------------------------------------------------------- lists


def test_queues_by_role(client: TestClient) -> None:
    mz = as_user(client, "mz_officer")
    app_id = filed(client, mz)
    due = api_app(client, app_id)["due_at"]
    ga = as_user(client, "ga_officer")
    r = ga.get("/sharing/applications")
    assert r.status_code == 200 and "我的申请" in r.text and "待我答复" in r.text
    assert f'data-app-id="{app_id}"' not in r.text  # GA filed nothing
    r = ga.get("/sharing/applications?tab=provider")
    assert f'data-app-id="{app_id}"' in r.text and due in r.text and "个工作日" in r.text
    assert "示范市民政局" in r.text
    r = ga.get("/sharing/applications?tab=provider&status=approved")
    assert f'data-app-id="{app_id}"' not in r.text
    r = mz.get("/sharing/applications")
    assert f'data-app-id="{app_id}"' in r.text and "待提供方答复" in r.text
    assert f'data-app-id="{app_id}"' not in mz.get("/sharing/applications?tab=provider").text
    # htmx asks for the table only.
    r = ga.get("/sharing/applications?tab=provider&status=", headers={"HX-Request": "true"})
    assert r.status_code == 200 and "<html" not in r.text and f'data-app-id="{app_id}"' in r.text
    admin = as_user(client, "admin")
    r = admin.get("/sharing/applications")
    assert r.status_code == 200 and "全部" in r.text and f'data-app-id="{app_id}"' in r.text
    r = admin.get("/sharing/applications?tab=mine")  # not the admin's: refused by the service
    assert r.status_code == 200  # the platform admin files none: an empty list
    assert as_user(client, "auditor").get("/sharing/applications").status_code == 403
    assert client.get("/sharing/applications", follow_redirects=False).status_code == 303
    assert ga.get("/sharing/applications?tab=all").status_code == 403


def test_nav_links_by_role(client: TestClient) -> None:
    assert 'href="/sharing/applications"' in as_user(client, "mz_officer").get("/catalog").text
    admin_page = as_user(client, "admin").get("/sharing/applications").text
    assert 'href="/sharing/board"' in admin_page and "共享看板" in admin_page
    auditor_page = as_user(client, "auditor").get("/catalog").text
    assert "/sharing/applications" not in auditor_page and "/sharing/board" not in auditor_page
    assert "/sharing/board" not in as_user(client, "ga_officer").get("/sharing/applications").text


# ---------------------------------------------------------------- one application


def test_actions_follow_status_and_role(client: TestClient) -> None:
    mz = as_user(client, "mz_officer")
    ga = as_user(client, "ga_officer")
    admin = as_user(client, "admin")
    app_id = filed(client, mz)
    url = f"/sharing/applications/{app_id}"
    provider_page = ga.get(url).text
    assert f'action="{url}/decide"' in provider_page and "部分同意" in provider_page
    assert f'action="{url}/withdraw"' not in provider_page
    consumer_page = mz.get(url).text
    assert f'action="{url}/withdraw"' in consumer_page and f'action="{url}/decide"' not in consumer_page
    admin_page = admin.get(url).text
    assert f'action="{url}/decide"' not in admin_page and f'action="{url}/review"' not in admin_page
    assert as_user(client, "auditor").get(url).status_code == 403
    assert as_user(client, "mz_admin").get(url).status_code == 200  # the same department

    # The consumer cannot answer for the provider: the project's 403 page.
    r = post(mz, f"{url}/decide", {"decision": "approve"})
    assert r.status_code == 403 and "只有提供方部门可以答复申请" in r.text

    # Refusal without a reason: shown next to the form.
    r = post(ga, f"{url}/decide", {"decision": "reject", "reason": ""})
    assert r.status_code == 422 and "请填写理由" in r.text and 'role="alert"' in r.text
    r = post(ga, f"{url}/decide", {"decision": "reject", "reason": "申请的用途与共享条件不符"})
    assert r.status_code == 303
    assert "不同意" in mz.get(url).text and "申请的用途与共享条件不符" in mz.get(url).text

    # Rejected: the consumer may negotiate, then escalate to coordination.
    consumer_page = mz.get(url).text
    assert f'action="{url}/negotiate"' in consumer_page and f'action="{url}/withdraw"' not in consumer_page
    r = post(mz, f"{url}/negotiate", {"reason": ""})
    assert r.status_code == 422 and "请填写理由" in r.text
    assert post(mz, f"{url}/negotiate", {"reason": "补充了法定依据"}).status_code == 303
    assert f'action="{url}/decide"' in ga.get(url).text  # the provider may answer again
    assert post(mz, f"{url}/escalate", {"reason": "协商未果"}).status_code == 303
    assert "协调中" in mz.get(url).text
    admin_page = admin.get(url).text
    assert f'action="{url}/coordinate"' in admin_page and "维持不予共享" in admin_page
    assert f'action="{url}/decide"' not in ga.get(url).text
    r = post(admin, f"{url}/coordinate", {"decision": "uphold", "reason": ""})
    assert r.status_code == 422 and "请填写理由" in r.text
    assert (
        post(admin, f"{url}/coordinate", {"decision": "uphold", "reason": "涉及个人信息，维持原答复"}).status_code
        == 303
    )
    page = mz.get(url).text
    assert "协调维持不予共享" in page and "可执行的操作" not in page
    # A step the status no longer allows is refused with the service's message.
    r = post(mz, f"{url}/withdraw", {})
    assert r.status_code == 409 and "不能执行“撤回”" in r.text, re.findall(r"error-message\">(.*?)<", r.text)


def test_partial_approval_through_the_form_creates_the_narrowed_grant(client: TestClient) -> None:
    mz = as_user(client, "mz_officer")
    ga = as_user(client, "ga_officer")
    app_id = filed(client, mz)
    url = f"/sharing/applications/{app_id}"
    end = TODAY + timedelta(days=180)
    narrowing = {
        "decision": "partial",
        "items": ["身份证号"],
        "clear_items": ["身份证号"],
        "valid_to": end.isoformat(),
        "rows_per_day": "500",
        "calls_per_minute": "30",
        "reason": "姓名不在共享条件范围内",
    }
    # Wider than asked, or not narrower at all: refused on the form.
    r = post(ga, f"{url}/decide", {**narrowing, "rows_per_day": "5000"})
    assert r.status_code == 422 and "同意的数据量须为正数且不超过申请量" in r.text
    r = post(ga, f"{url}/decide", {"decision": "partial", "items": ["身份证号", "姓名"], "reason": "x"})
    assert r.status_code == 422 and "部分同意须缩小" in r.text
    r = post(ga, f"{url}/decide", {**narrowing, "valid_to": "明年"})
    assert r.status_code == 422 and "日期格式应为" in r.text
    r = post(ga, f"{url}/decide", {**narrowing, "clear_items": ["姓名"]})
    assert r.status_code == 422 and "明文信息项须在同意的信息项之内" in r.text
    r = post(ga, f"{url}/decide", {**narrowing, "items": []})
    assert r.status_code == 422 and "请选择所需信息项" in r.text

    r = post(ga, f"{url}/decide", narrowing)
    assert r.status_code == 303
    data = api_app(client, app_id)
    assert data["status"] == "partially_approved" and data["approved_items"] == ["身份证号"]
    grant = client.get(f"/api/v1/sharing/grants/{data['grant_id']}", headers=auth(client, "mz_officer")).json()
    assert grant["items"] == ["身份证号"] and grant["clear_items"] == ["身份证号"]
    assert grant["valid_to"] == end.isoformat()
    assert (grant["rows_per_day"], grant["calls_per_minute"]) == (500, 30)

    page = mz.get(url).text
    assert "部分同意" in page and "姓名不在共享条件范围内" in page and f"/sharing/grants/{data['grant_id']}" in page
    mine = mz.get("/sharing/grants").text
    row = re.search(rf'data-grant-id="{data["grant_id"]}".*?</tr>', mine, re.S)
    assert row and "身份证号" in row.group(0) and "姓名" not in row.group(0) and "明文" in row.group(0)
    assert "每日 500 条" in row.group(0)


def test_plain_approval_with_items_in_clear(client: TestClient) -> None:
    mz = as_user(client, "mz_officer")
    ga = as_user(client, "ga_officer")
    app_id = filed(client, mz)
    url = f"/sharing/applications/{app_id}"
    page = ga.get(url).text
    assert "明文提供的敏感信息项" in page
    r = post(ga, f"{url}/decide", {"decision": "approve", "clear_items": ["姓名"]})
    assert r.status_code == 303
    data = api_app(client, app_id)
    assert data["status"] == "approved" and data["approved_items"] == ["身份证号", "姓名"]
    grant = client.get(f"/api/v1/sharing/grants/{data['grant_id']}", headers=auth(client, "ga_officer")).json()
    assert grant["clear_items"] == ["姓名"]


def test_compliance_review_through_the_pages(client: TestClient) -> None:
    admin = as_user(client, "admin")
    r = post(admin, "/sharing/board/compliance", {"on": "1"})
    assert r.status_code == 303
    assert "已开启" in admin.get("/sharing/board").text
    mz = as_user(client, "mz_officer")
    app_id = filed(client, mz)
    url = f"/sharing/applications/{app_id}"
    assert "符合性审查中" in mz.get(url).text and "符合性审查截止" in mz.get(url).text
    ga = as_user(client, "ga_officer")
    assert f'action="{url}/decide"' not in ga.get(url).text
    assert f'action="{url}/review"' in admin.get(url).text
    r = post(admin, f"{url}/review", {"decision": "return", "reason": ""})
    assert r.status_code == 422 and "请填写理由" in r.text
    assert post(admin, f"{url}/review", {"decision": "pass"}).status_code == 303
    assert api_app(client, app_id)["status"] == "awaiting_provider"
    assert post(as_user(client, "ga_officer"), "/sharing/board/compliance", {"on": "0"}).status_code == 403


def test_withdraw(client: TestClient) -> None:
    mz = as_user(client, "mz_officer")
    app_id = filed(client, mz)
    r = post(mz, f"/sharing/applications/{app_id}/withdraw", {"reason": "不再需要"})
    assert r.status_code == 303
    page = mz.get(f"/sharing/applications/{app_id}").text
    assert "已撤回" in page and "不再需要" in page


def test_unknown_application_and_bad_ids(client: TestClient) -> None:
    mz = as_user(client, "mz_officer")
    assert mz.get("/sharing/applications/999999").status_code == 404
    assert mz.get("/sharing/applications/abc").status_code == 404
    assert post(mz, "/sharing/applications/999999/withdraw", {}).status_code == 404
    r = mz.post("/sharing/applications/1/withdraw", data={}, follow_redirects=False)
    assert r.status_code == 403  # no CSRF token


# ---------------------------------------------------------------- grants


def _approved(client: TestClient) -> tuple[TestClient, TestClient, int]:
    mz = as_user(client, "mz_officer")
    ga = as_user(client, "ga_officer")
    app_id = filed(client, mz)
    assert post(ga, f"/sharing/applications/{app_id}/decide", {"decision": "approve"}).status_code == 303
    return mz, ga, int(api_app(client, app_id)["grant_id"])


def test_grant_pages_and_provider_actions(client: TestClient) -> None:
    mz, ga, grant_id = _approved(client)
    url = f"/sharing/grants/{grant_id}"
    provided = ga.get("/sharing/grants?tab=provided").text
    assert f'data-grant-id="{grant_id}"' in provided and "示范市民政局" in provided
    assert f'data-grant-id="{grant_id}"' not in ga.get("/sharing/grants").text
    consumer_view = mz.get(url).text
    assert "授权范围" in consumer_view and f'action="{url}/suspend"' not in consumer_view
    provider_view = ga.get(url).text
    assert f'action="{url}/suspend"' in provider_view and f'action="{url}/revoke"' in provider_view
    assert f'action="{url}/resume"' not in provider_view

    r = post(mz, f"{url}/suspend", {"reason": "x"})
    assert r.status_code == 403
    r = post(ga, f"{url}/suspend", {"reason": ""})
    assert r.status_code == 422 and "请填写理由" in r.text
    assert post(ga, f"{url}/suspend", {"reason": "发现超范围使用"}).status_code == 303
    page = ga.get(url).text
    assert "已暂停" in page and "发现超范围使用" in page and f'action="{url}/resume"' in page
    assert post(ga, f"{url}/resume", {}).status_code == 303
    r = post(ga, f"{url}/renew", {"valid_to": "2000-01-01"})
    assert r.status_code == 422 and "续期的截止日期须晚于原截止日期" in r.text
    r = post(ga, f"{url}/renew", {"valid_to": ""})
    assert r.status_code == 422 and "请填写日期" in r.text
    later = (TODAY + timedelta(days=800)).isoformat()
    assert post(ga, f"{url}/renew", {"valid_to": later}).status_code == 303
    assert later in mz.get(url).text
    assert post(ga, f"{url}/revoke", {"reason": "业务已终止"}).status_code == 303
    page = mz.get(url).text
    assert "已撤销" in page and "业务已终止" in page and "变更记录" in page
    assert post(ga, f"{url}/unknown", {}).status_code == 404
    assert as_user(client, "auditor").get(url).status_code == 403
    assert as_user(client, "admin").get("/sharing/grants").status_code == 200
    assert as_user(client, "auditor").get("/sharing/grants").status_code == 403


def test_entry_page_share_buttons(client: TestClient) -> None:
    conditional = published(client)
    free = published(client, "unconditional")
    closed = published(client, "none")
    mz = as_user(client, "mz_officer")
    assert "申请共享" in mz.get(f"/catalog/{conditional['id']}").text
    closed_page = mz.get(f"/catalog/{closed['id']}").text
    assert f'href="/sharing/cases/new?entry_id={closed["id"]}"' in closed_page and "不予共享" in closed_page
    free_page = mz.get(f"/catalog/{free['id']}").text
    assert 'action="/sharing/grants/unconditional"' in free_page and "获取授权" in free_page
    # The provider itself is offered none of them.
    ga_page = as_user(client, "ga_officer").get(f"/catalog/{free['id']}").text
    assert 'action="/sharing/grants/unconditional"' not in ga_page
    assert "/sharing/apply" not in as_user(client, "ga_officer").get(f"/catalog/{conditional['id']}").text

    r = post(mz, "/sharing/grants/unconditional", {"entry_id": str(free["id"]), "purpose_kind": "nonsense"})
    assert r.status_code == 422 and "用途须为" in r.text and "获取授权" in r.text
    r = post(mz, "/sharing/grants/unconditional", {"entry_id": str(conditional["id"]), "purpose_kind": "other"})
    assert r.status_code == 409 and "须提交共享申请" in r.text
    r = post(mz, "/sharing/grants/unconditional", {"entry_id": str(free["id"]), "purpose_kind": "work_reference"})
    assert r.status_code == 303
    grant_page = mz.get(r.headers["location"])
    assert grant_page.status_code == 200 and "无条件共享" in grant_page.text and "有效" in grant_page.text
    r = post(
        as_user(client, "ga_officer"),
        "/sharing/grants/unconditional",
        {"entry_id": str(free["id"]), "purpose_kind": "other"},
    )
    assert r.status_code == 403


# ---------------------------------------------------------------- board


def test_board_for_the_platform_admin_only(client: TestClient, settings: Any) -> None:
    mz = as_user(client, "mz_officer")
    late = filed(client, mz)
    from sqlalchemy import update

    from datatong.db import session_scope
    from datatong.sharing.models import ShareApplication

    with session_scope(settings.database_url) as s:
        s.execute(update(ShareApplication).where(ShareApplication.id == late).values(due_at=TODAY - timedelta(days=30)))
    admin = as_user(client, "admin")
    r = admin.get("/sharing/board")
    assert r.status_code == 200
    for title in ("逾期未答复", "协调中", "协商中", "待符合性审查", "不予共享协调", "供需对接"):
        assert title in r.text
    overdue = re.search(r'id="b-overdue".*?</section>', r.text, re.S)
    assert overdue and f"/sharing/applications/{late}" in overdue.group(0)
    assert "示范市公安局" in overdue.group(0) and "个工作日" in overdue.group(0) and "已超期" in overdue.group(0)
    queue = as_user(client, "ga_officer").get("/sharing/applications?tab=provider").text
    assert "row-overdue" in queue and "超期" in queue
    assert as_user(client, "ga_officer").get("/sharing/board").status_code == 403
    assert as_user(client, "auditor").get("/sharing/board").status_code == 403
    assert client.get("/sharing/board", follow_redirects=False).status_code == 303


@pytest.mark.parametrize("path", ["/sharing/applications", "/sharing/grants", "/sharing/board"])
def test_pages_send_the_strict_csp(client: TestClient, path: str) -> None:
    r = as_user(client, "admin").get(path)
    assert r.status_code == 200
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert "style=" not in r.text and "<script>" not in r.text


def test_edit_a_draft_then_submit(client: TestClient) -> None:
    mz = as_user(client, "mz_officer")
    app_id = filed(client, mz, action="draft", accept_commitment=None)
    url = f"/sharing/applications/{app_id}/edit"
    assert f'href="{url}"' in mz.get(f"/sharing/applications/{app_id}").text
    r = mz.get(url)
    assert r.status_code == 200 and "修改申请（草稿）" in r.text and 'value="低保审核系统"' in r.text
    assert as_user(client, "ga_officer").get(url).status_code == 404  # drafts are the applicant's own
    entry_id = api_app(client, app_id)["entry_id"]
    form = apply_form(entry_id, items=["身份证号"], action="draft", accept_commitment=None)
    r = post(mz, url, {**form, "legal_basis": ""})
    assert r.status_code == 422 and "请填写依据" in r.text
    assert api_app(client, app_id)["items"] == ["身份证号", "姓名"]  # nothing saved
    assert post(mz, url, form).status_code == 303
    assert api_app(client, app_id)["items"] == ["身份证号"]
    history = mz.get(f"/sharing/applications/{app_id}").text
    assert "修改：信息项" in history
    r = post(as_user(client, "mz_admin"), url, {**form, "action": "submit", "accept_commitment": "1"})
    assert r.status_code == 303
    assert api_app(client, app_id)["status"] == "awaiting_provider"
    r = mz.get(url)
    assert r.status_code == 409 and "不能执行“修改”" in r.text


def test_transfer_a_grant(client: TestClient) -> None:
    mz, ga, grant_id = _approved(client)
    url = f"/sharing/grants/{grant_id}"
    assert f'action="{url}/transfer"' in ga.get(url).text
    assert f'action="{url}/transfer"' in as_user(client, "admin").get(url).text
    assert f'action="{url}/transfer"' not in mz.get(url).text
    r = post(mz, f"{url}/transfer", {"department_code": "SJ", "reason": "职责调整"})
    assert r.status_code == 403
    r = post(ga, f"{url}/transfer", {"department_code": "SJ", "reason": ""})
    assert r.status_code == 422 and "请填写理由" in r.text
    r = post(ga, f"{url}/transfer", {"department_code": "GA", "reason": "x"})
    assert r.status_code == 422 and "不能把授权转给提供方自己" in r.text
    r = post(ga, f"{url}/transfer", {"department_code": "SJ", "reason": "职责调整", "system_name": "审计系统"})
    assert r.status_code == 303
    grant = client.get(f"/api/v1/sharing/grants/{grant_id}", headers=auth(client, "ga_officer")).json()
    assert grant["consumer_code"] == "SJ"
    page = ga.get(url).text
    assert "示范市审计局" in page and "转移" in page and "职责调整" in page


def test_coordination_ordering_a_partial_approval(client: TestClient) -> None:
    mz = as_user(client, "mz_officer")
    ga = as_user(client, "ga_officer")
    admin = as_user(client, "admin")
    app_id = filed(client, mz)
    url = f"/sharing/applications/{app_id}"
    assert post(ga, f"{url}/decide", {"decision": "reject", "reason": "不符合共享条件"}).status_code == 303
    assert post(mz, f"{url}/negotiate", {"reason": "补充依据"}).status_code == 303
    assert post(mz, f"{url}/escalate", {"reason": "协商未果"}).status_code == 303
    r = post(admin, f"{url}/coordinate", {"decision": "maybe"})
    assert r.status_code == 422 and "协调结论须为" in r.text
    r = post(admin, f"{url}/coordinate", {"decision": "partial", "items": ["姓名"], "reason": "只提供姓名"})
    assert r.status_code == 303
    data = api_app(client, app_id)
    assert data["status"] == "partially_approved" and data["approved_items"] == ["姓名"]
    assert "协调部分同意" in mz.get(url).text
