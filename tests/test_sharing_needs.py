"""Supply–demand docking (供需对接): a need is posted, routed, answered within the deadline
and closed, by the right people only, every move audited (datatong/sharing/needs.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime
from typing import Any

import pytest
from conftest import PASSWORD, auth, create_entry
from sharing_helpers import call, who
from sqlalchemy import select

from datatong.audit.models import AuditRecord
from datatong.db import session_scope
from datatong.errors import AppError
from datatong.sharing import needs
from datatong.sharing.models import NEED_STATUSES, ShareNeed
from datatong.sharing.workdays import due_date

NEEDS = "/api/v1/sharing/needs"


def need_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "title": "全市新生儿出生登记信息",
        "description": "低保家庭新增人口核验需要新生儿出生登记信息，按日更新",
        "items": ["新生儿姓名", "出生日期", "父母身份证号"],
        "purpose_kind": "verification",
        "purpose": "低保家庭人口变化核验",
    }
    body.update(overrides)
    return body


def post(client: Any, user: str = "mz_officer", **overrides: Any) -> dict[str, Any]:
    r = client.post(NEEDS, json=need_body(**overrides), headers=auth(client, user))
    assert r.status_code == 201, r.text
    return dict(r.json())


def act(client: Any, need_id: int, action: str, user: str, status: int = 200, **body: Any) -> dict[str, Any]:
    r = client.post(f"{NEEDS}/{need_id}/{action}", json=body, headers=auth(client, user))
    assert r.status_code == status, r.text
    return dict(r.json())


def in_state(client: Any, state: str) -> int:
    """A need of 民政局 moved to ``state`` (routed to 公安局 where it has been routed)."""
    need_id = int(post(client)["id"])
    if state == "open":
        return need_id
    act(client, need_id, "route", "admin", department_code="GA")
    if state in ("will_publish", "closed"):
        act(client, need_id, "answer", "ga_officer", answer="will_publish", text="下季度编目发布")
    if state == "cannot":
        act(client, need_id, "answer", "ga_officer", answer="cannot", text="本局不采集该数据")
    if state == "closed":
        act(client, need_id, "close", "mz_officer", reason="已线下解决")
    return need_id


def audit_trail(settings: Any, need_id: int) -> list[tuple[str, str, str | None, str | None]]:
    with session_scope(settings.database_url) as s:
        rows = s.execute(
            select(AuditRecord.action, AuditRecord.actor, AuditRecord.subject_department, AuditRecord.reason)
            .where(AuditRecord.resource == f"need:{need_id}", AuditRecord.action != "sharing.need.read")
            .order_by(AuditRecord.seq)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


def fails(code: str, fn: Any, *args: Any, **kwargs: Any) -> AppError:
    with pytest.raises(AppError) as err:
        fn(*args, **kwargs)
    assert err.value.code == code, (err.value.code, err.value.message)
    return err.value


# ---------------------------------------------------------------- life cycle


def test_full_life_cycle_post_route_answer_close_with_the_new_entry(client, settings):
    need = post(client)
    assert (need["status"], need["status_label"]) == ("open", "待分派")
    assert (need["consumer_code"], need["consumer_name"]) == ("MZ", "示范市民政局")
    assert need["routed_to_code"] is None and need["due_at"] is None and not need["overdue"]
    assert need["purpose_label"] == "数据校核" and need["items"] == ["新生儿姓名", "出生日期", "父母身份证号"]
    need_id = need["id"]

    routed = act(client, need_id, "route", "admin", department_code="GA", reason="出生登记由公安户籍部门采集")
    assert (routed["status"], routed["status_label"]) == ("routed", "待部门答复")
    assert (routed["routed_to_code"], routed["routed_to_name"]) == ("GA", "示范市公安局")
    assert routed["due_at"] is not None and routed["routed_at"] is not None and not routed["overdue"]

    answered = act(client, need_id, "answer", "ga_officer", answer="will_publish", text="两周内编目并发布")
    assert (answered["status"], answered["status_label"]) == ("will_publish", "将编目发布")
    assert answered["answer"] == "两周内编目并发布" and answered["answered_at"] is not None

    entry = create_entry(client, publish=True, name="新生儿出生登记信息")
    closed = act(client, need_id, "close", "ga_officer", entry_id=entry["id"])
    assert (closed["status"], closed["status_label"]) == ("closed", "已关闭")
    assert (closed["entry_id"], closed["entry_code"], closed["entry_name"]) == (
        entry["id"],
        entry["code"],
        "新生儿出生登记信息",
    )
    assert closed["closed_at"] is not None

    detail = client.get(f"{NEEDS}/{need_id}", headers=auth(client, "mz_officer")).json()
    assert [(h["action"], h["actor"], h["from_status"], h["to_status"]) for h in detail["history"]] == [
        ("post", "mz_officer", None, "open"),
        ("route", "admin", "open", "routed"),
        ("answer", "ga_officer", "routed", "will_publish"),
        ("close", "ga_officer", "will_publish", "closed"),
    ]
    assert detail["history"][1]["reason"] == "出生登记由公安户籍部门采集"
    assert [a[:3] for a in audit_trail(settings, need_id)] == [
        ("sharing.need.post", "mz_officer", "MZ"),
        ("sharing.need.route", "admin", "GA"),
        ("sharing.need.answer", "ga_officer", "GA"),
        ("sharing.need.close", "ga_officer", "GA"),
    ]


def test_answer_naming_a_planned_entry_then_linking_it_once_published(client):
    need_id = in_state(client, "routed")
    draft = create_entry(client, name="新生儿出生登记信息")
    r = act(client, need_id, "answer", "ga_admin", answer="will_publish", entry_id=draft["id"])
    assert r["status"] == "will_publish" and r["entry_id"] == draft["id"]
    assert r["entry_code"] is None  # not published: the consumer sees no unpublished entry's name
    # Not yet published: the answering department cannot close by it.
    err = act(client, need_id, "close", "ga_admin", status=422)
    assert err["error"]["code"] == "sharing.need_entry_unpublished"
    ga = auth(client, "ga_officer")
    assert client.post(f"/api/v1/catalog/entries/{draft['id']}/submit", headers=ga).status_code == 200
    r = client.post(
        f"/api/v1/catalog/entries/{draft['id']}/review", json={"decision": "approve"}, headers=auth(client, "admin")
    )
    assert r.status_code == 200, r.text
    closed = act(client, need_id, "close", "ga_admin")  # the entry named in the answer
    assert closed["status"] == "closed" and closed["entry_code"] == draft["code"]


def test_answer_with_an_already_published_entry_closes_the_need(client, settings):
    need_id = in_state(client, "routed")
    entry = create_entry(client, publish=True)
    r = act(client, need_id, "answer", "ga_officer", answer="will_publish", entry_id=entry["id"])
    assert r["status"] == "closed" and r["entry_id"] == entry["id"] and r["closed_at"] is not None
    assert [a[0] for a in audit_trail(settings, need_id)][-2:] == ["sharing.need.answer", "sharing.need.close"]


def test_answering_department_links_only_its_own_published_entry(client):
    need_id = in_state(client, "will_publish")
    err = act(client, need_id, "close", "ga_officer", status=422)
    assert err["error"]["code"] == "sharing.need_entry_required"
    theirs = create_entry(client, "mz_officer", publish=True)
    err = act(client, need_id, "close", "ga_officer", status=422, entry_id=theirs["id"])
    assert err["error"]["code"] == "sharing.need_entry_not_own"
    their_draft = create_entry(client, "mz_officer")
    err = act(client, need_id, "close", "ga_officer", status=404, entry_id=their_draft["id"])
    assert err["error"]["code"] == "not_found"


def test_consumer_and_platform_admin_close_with_or_without_an_entry(client, settings):
    open_id = in_state(client, "open")
    closed = act(client, open_id, "close", "mz_officer", reason="已通过其他渠道获取")
    assert closed["status"] == "closed" and closed["entry_id"] is None
    assert audit_trail(settings, open_id)[-1] == ("sharing.need.close", "mz_officer", "MZ", "已通过其他渠道获取")

    routed_id = in_state(client, "routed")
    unpublished = create_entry(client)
    err = act(client, routed_id, "close", "admin", status=404, entry_id=unpublished["id"])
    assert err["error"]["code"] == "not_found"
    entry = create_entry(client, publish=True)
    closed = act(client, routed_id, "close", "admin", entry_id=entry["id"])
    assert closed["status"] == "closed" and closed["entry_id"] == entry["id"]


def test_cannot_requires_a_reason_and_the_admin_reroutes(client, settings):
    need_id = in_state(client, "routed")
    err = act(client, need_id, "answer", "ga_officer", status=422, answer="cannot", text="  ")
    assert err["error"]["code"] == "sharing.need_text_required" and err["error"]["message_en"]
    err = act(client, need_id, "answer", "ga_officer", status=422, answer="maybe", text="x")
    assert err["error"]["code"] == "sharing.need_answer_invalid"
    reason = "本局不采集该数据；出生医学证明由卫生健康部门签发，" + "建议分派至卫健委" * 10  # > 64 characters
    r = act(client, need_id, "answer", "ga_officer", answer="cannot", text=reason)
    assert (r["status"], r["status_label"], r["answer"]) == ("cannot", "无法提供", reason)
    # The department that cannot is not asked again.
    err = act(client, need_id, "route", "admin", status=422, department_code="GA")
    assert err["error"]["code"] == "sharing.need_route_same"
    r = act(client, need_id, "route", "admin", department_code="SJ")
    assert (r["status"], r["routed_to_code"], r["answer"], r["answered_at"]) == ("routed", "SJ", None, None)
    trail = audit_trail(settings, need_id)
    assert [a[0] for a in trail] == [
        "sharing.need.post",
        "sharing.need.route",
        "sharing.need.answer",
        "sharing.need.route",
    ]
    assert trail[2][1:3] == ("ga_officer", "GA") and trail[2][3] == reason[:64]
    history = client.get(f"{NEEDS}/{need_id}", headers=auth(client, "admin")).json()["history"]
    assert history[2]["reason"] == reason  # the whole text, from the record's detail


def test_routing_checks_the_department(client):
    need_id = in_state(client, "open")
    err = act(client, need_id, "route", "admin", status=422, department_code="NOPE")
    assert err["error"]["code"] == "department.unknown"
    err = act(client, need_id, "route", "admin", status=422, department_code="MZ")
    assert err["error"]["code"] == "sharing.need_route_self"


# ---------------------------------------------------------------- illegal moves

# action -> (who takes it, body, states it may start from)
MOVES: dict[str, tuple[str, dict[str, Any], set[str]]] = {
    "route": ("admin", {"department_code": "SJ"}, {"open", "cannot"}),
    "answer": ("ga_officer", {"answer": "cannot", "text": "无此数据"}, {"routed"}),
    "close": ("mz_officer", {"reason": "不再需要"}, {"open", "routed", "will_publish", "cannot"}),
    "link": ("ga_officer", {}, {"will_publish"}),  # the answering department closes by its entry
}


@pytest.mark.parametrize("state", list(NEED_STATUSES))
def test_each_illegal_transition_is_refused_with_409(client, state):
    entry = create_entry(client, publish=True)
    for action, (user, body, sources) in MOVES.items():
        if state == "open" and user == "ga_officer":
            continue  # not routed to 公安局: it does not see the need (404, tested below)
        need_id = in_state(client, state)
        payload = {**body, "entry_id": entry["id"]} if action == "link" else body
        r = client.post(
            f"{NEEDS}/{need_id}/{'close' if action == 'link' else action}", json=payload, headers=auth(client, user)
        )
        if state in sources:
            assert r.status_code == 200, (action, state, r.text)
        else:
            assert r.status_code == 409, (action, state, r.text)
            error = r.json()["error"]
            assert error["code"] == "sharing.need_transition_invalid"
            assert NEED_STATUSES[state] in error["message"] and state in error["message_en"]


def test_transition_table_is_what_the_service_enforces():
    assert {a: s.sources for a, s in needs.TRANSITIONS.items()} == {a: m[2] for a, m in MOVES.items()}


def test_wrong_party_is_forbidden(client):
    need_id = in_state(client, "routed")
    for user, action, body in [
        ("mz_officer", "answer", {"answer": "cannot", "text": "x"}),
        ("admin", "answer", {"answer": "cannot", "text": "x"}),
        ("ga_officer", "route", {"department_code": "SJ"}),
        ("mz_officer", "route", {"department_code": "SJ"}),
    ]:
        r = act(client, need_id, action, user, status=403, **body)
        assert r["error"]["code"] == "forbidden", (user, action)
    r = client.post(NEEDS, json=need_body(), headers=auth(client, "admin"))
    assert r.status_code == 403  # the platform admin routes needs, departments post them


# ---------------------------------------------------------------- visibility


def _third_department_officer(client: Any) -> str:
    body = {
        "username": "sj_officer",
        "display_name": "审计数据管理员",
        "password": PASSWORD,
        "role": "data_officer",
        "department_code": "SJ",
    }
    r = client.post("/api/v1/users", json=body, headers=auth(client, "admin"))
    assert r.status_code == 201, r.text
    return "sj_officer"


def test_visibility_consumer_routed_department_and_platform_admin_only(client):
    sj = _third_department_officer(client)
    need_id = in_state(client, "open")
    url = f"{NEEDS}/{need_id}"

    def status(user: str) -> int:
        return int(client.get(url, headers=auth(client, user)).status_code)

    assert (status("mz_officer"), status("mz_admin"), status("admin")) == (200, 200, 200)
    assert (status("ga_officer"), status(sj)) == (404, 404)  # not routed to them
    assert status("auditor") == 403 and client.get(url).status_code == 401
    assert client.get(url, headers=auth(client, "client")).status_code == 403
    act(client, need_id, "route", "admin", department_code="GA")
    assert (status("ga_officer"), status("ga_admin"), status(sj)) == (200, 200, 404)

    def listed(user: str, view: str) -> list[int]:
        r = client.get(NEEDS, params={"view": view}, headers=auth(client, user))
        assert r.status_code == 200, r.text
        return [n["id"] for n in r.json()]

    assert listed("mz_officer", "mine") == [need_id] and listed("mz_officer", "assigned") == []
    assert listed("ga_officer", "assigned") == [need_id] and listed("ga_officer", "mine") == []
    assert listed(sj, "mine") == [] and listed(sj, "assigned") == []
    assert listed("admin", "all") == [need_id]
    r = client.get(NEEDS, params={"view": "all"}, headers=auth(client, "mz_officer"))
    assert r.status_code == 403
    assert client.get(NEEDS, headers=auth(client, "auditor")).status_code == 403
    r = client.get(NEEDS, params={"view": "everything"}, headers=auth(client, "admin"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "sharing.view_invalid"
    r = client.get(NEEDS, params={"view": "all", "status": "routed"}, headers=auth(client, "admin"))
    assert [n["id"] for n in r.json()] == [need_id]
    r = client.get(NEEDS, params={"view": "all", "status": "open"}, headers=auth(client, "admin"))
    assert r.json() == []
    r = client.get(NEEDS, params={"status": "nonsense"}, headers=auth(client, "admin"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "sharing.status_unknown"

    # Re-routed elsewhere, the department that could not no longer sees it.
    act(client, need_id, "answer", "ga_officer", answer="cannot", text="无此数据")
    act(client, need_id, "route", "admin", department_code="SJ")
    assert (status("ga_officer"), status(sj), status("mz_officer")) == (404, 200, 200)


# ---------------------------------------------------------------- deadlines


def test_answer_deadline_is_ten_working_days_across_national_day_2025(client, settings):
    need_id = in_state(client, "open")
    admin = who(settings, "admin")
    # Friday 26 September 2025, 10:00 in Beijing: 28 Sep (Sunday) and 11 Oct (Saturday) are
    # 调休 working days, 1–8 October the 国庆/中秋 holiday.
    now = datetime(2025, 9, 26, 2, 0)
    need = call(settings, needs.route, settings, admin, need_id, department_code="GA", now=now)
    assert need.due_at == date(2025, 10, 16) == due_date(settings, "need_answer", now)
    with session_scope(settings.database_url) as s:
        stored = s.get(ShareNeed, need_id)
        assert stored is not None
        assert not needs.overdue(stored, date(2025, 10, 16))  # the due day itself is in time
        assert needs.overdue(stored, date(2025, 10, 17))
        assert needs.overdue(stored)  # today
    r = client.get(f"{NEEDS}/{need_id}", headers=auth(client, "ga_officer")).json()
    assert r["overdue"] and r["due_at"] == "2025-10-16"
    r = client.get(NEEDS, params={"view": "assigned", "overdue": True}, headers=auth(client, "ga_officer"))
    assert [n["id"] for n in r.json()] == [need_id]
    # Answered (late), it is no longer overdue.
    r = act(client, need_id, "answer", "ga_officer", answer="will_publish", text="补充编目")
    assert not r["overdue"]


def test_deadline_counts_from_the_beijing_day_and_follows_the_setting(client, settings):
    admin = who(settings, "admin")
    # 17:00 UTC on 30 September is 01:00 on 1 October in Beijing: the clock starts in the holiday.
    need_id = in_state(client, "open")
    need = call(settings, needs.route, settings, admin, need_id, department_code="GA", now=datetime(2025, 9, 30, 17, 0))
    assert need.due_at == date(2025, 10, 21)
    five = replace(settings, need_answer_days=5)  # local rules may give fewer days
    other = in_state(client, "open")
    need = call(settings, needs.route, five, admin, other, department_code="GA", now=datetime(2025, 9, 26, 2, 0))
    assert need.due_at == date(2025, 10, 10)


# ---------------------------------------------------------------- input


def test_bad_input_is_refused_with_a_clear_error(client):
    mz = auth(client, "mz_officer")
    cases = [
        (need_body(title="   "), "sharing.need_title_required"),
        (need_body(description=""), "sharing.need_description_required"),
        (need_body(purpose=""), "sharing.need_purpose_required"),
        (need_body(purpose_kind="fun"), "sharing.purpose_invalid"),
        (need_body(items=[]), "sharing.need_items_required"),
        (need_body(items=["姓名", " "]), "sharing.need_items_required"),
        (need_body(items=["姓名", "姓名 "]), "sharing.item_duplicate"),
        (need_body(items=["x" * 201]), "sharing.need_items_invalid"),
    ]
    for body, code in cases:
        r = client.post(NEEDS, json=body, headers=mz)
        assert r.status_code == 422, (body, r.text)
        error = r.json()["error"]
        assert error["code"] == code and error["message"] and error["message_en"], error
    body = need_body()
    del body["title"]
    r = client.post(NEEDS, json=body, headers=mz)
    assert r.status_code == 422 and r.json()["error"]["message_en"]
    r = client.post(f"{NEEDS}/999999/route", json={"department_code": "GA"}, headers=auth(client, "admin"))
    assert r.status_code == 404


def test_service_posts_with_the_given_time(client, settings):
    mz = who(settings, "mz_officer")
    now = datetime(2025, 9, 26, 2, 0)
    need = call(settings, needs.post_need, mz, now=now, **need_body(items=[" 出生日期 "]))
    assert need.status == "open" and need.created_at == now and need.items == ["出生日期"]
    fails("forbidden", call, settings, needs.post_need, who(settings, "auditor"), **need_body())


def test_each_party_is_told(client, settings):
    from datatong.orgs.models import User
    from datatong.sharing.models import InboxMessage

    def told(need_id: int) -> set[str]:
        with session_scope(settings.database_url) as s:
            rows = s.execute(
                select(User.username)
                .join(InboxMessage, InboxMessage.user_id == User.id)
                .where(InboxMessage.need_id == need_id)
            )
            return {r[0] for r in rows}

    need_id = in_state(client, "open")
    assert told(need_id) == {"admin"}  # the platform admin routes it
    act(client, need_id, "route", "admin", department_code="GA")
    assert told(need_id) == {"admin", "ga_admin", "ga_officer"}
    act(client, need_id, "answer", "ga_officer", answer="will_publish", text="编目中")
    assert told(need_id) == {"admin", "ga_admin", "ga_officer", "mz_officer", "mz_admin"}
