"""Sharing rules beyond the application life cycle: 不予共享 coordination cases, grant
transfer, editing a returned draft, the admin's masking rules and the catalog's
15-working-day update deadline after a change of data items."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from conftest import auth, create_entry, entry_body
from sharing_helpers import application_fields, published, who

from datatong.catalog import service as catalog_service
from datatong.db import session_scope
from datatong.sharing import masking, policy, workdays
from datatong.sharing.authorize import authorize

SH = "/api/v1/sharing"


def _json(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, date) else v for k, v in fields.items()}


def _granted(client: Any) -> tuple[dict[str, Any], int]:
    entry = published(client)
    mz, ga = auth(client, "mz_officer"), auth(client, "ga_officer")
    app = client.post(f"{SH}/applications", json=_json(application_fields(entry["id"])), headers=mz).json()
    client.post(f"{SH}/applications/{app['id']}/submit", json={"accept_commitment": True}, headers=mz)
    r = client.post(f"{SH}/applications/{app['id']}/decide", json={"decision": "approve"}, headers=ga)
    assert r.status_code == 200, r.text
    return entry, int(r.json()["grant_id"])


# --- 不予共享 coordination -----------------------------------------------------------------


def _no_share(client: Any) -> dict[str, Any]:
    return published(client, "none")


def test_case_life_cycle_and_who_sees_the_basis(client: Any) -> None:
    entry = _no_share(client)
    mz, admin, ga = auth(client, "mz_officer"), auth(client, "admin"), auth(client, "ga_officer")
    # The application path stays closed …
    r = client.post(f"{SH}/applications", json=_json(application_fields(entry["id"])), headers=mz)
    assert r.status_code == 409 and r.json()["error"]["code"] == "sharing.not_shareable"
    # … a coordination case is the way.
    body = {"entry_id": entry["id"], "duty": "低保对象家庭经济状况核对", "legal_basis": "《社会救助暂行办法》第十一条"}
    r = client.post(f"{SH}/cases", json={**body, "duty": " "}, headers=mz)
    assert r.status_code == 422 and r.json()["error"]["code"] == "sharing.case_field_required"
    r = client.post(f"{SH}/cases", json=body, headers=mz)
    assert r.status_code == 201, r.text
    case = r.json()
    assert case["status"] == "open" and case["no_share_basis"] is None  # hidden from the consumer
    r = client.post(f"{SH}/cases", json=body, headers=mz)
    assert r.status_code == 409 and r.json()["error"]["code"] == "sharing.case_exists"
    assert client.get(f"{SH}/cases/{case['id']}", headers=admin).json()["no_share_basis"] == "涉及国家秘密"
    assert client.get(f"{SH}/cases/{case['id']}", headers=ga).json()["no_share_basis"] == "涉及国家秘密"
    assert client.get(f"{SH}/cases/{case['id']}", headers=auth(client, "auditor")).status_code in (403, 404)
    # Only the platform admin resolves, with a reason, once.
    r = client.post(f"{SH}/cases/{case['id']}/resolve", json={"decision": "upheld", "resolution": "x"}, headers=ga)
    assert r.status_code == 403
    r = client.post(f"{SH}/cases/{case['id']}/resolve", json={"decision": "upheld"}, headers=admin)
    assert r.status_code == 422 and r.json()["error"]["code"] == "sharing.reason_required"
    r = client.post(f"{SH}/cases/{case['id']}/resolve", json={"decision": "maybe", "resolution": "x"}, headers=admin)
    assert r.status_code == 422
    r = client.post(
        f"{SH}/cases/{case['id']}/resolve",
        json={"decision": "referred", "resolution": "请公安局调整为有条件共享"},
        headers=admin,
    )
    assert r.status_code == 200 and r.json()["status"] == "referred" and r.json()["status_label"] == "已协调提供方调整"
    r = client.post(f"{SH}/cases/{case['id']}/resolve", json={"decision": "upheld", "resolution": "x"}, headers=admin)
    assert r.status_code == 409 and r.json()["error"]["code"] == "sharing.case_closed"
    assert [c["id"] for c in client.get(f"{SH}/cases", headers=mz).json()] == [case["id"]]
    assert client.get(f"{SH}/cases", params={"status": "open"}, headers=admin).json() == []
    actions = [
        r["action"]
        for r in client.get("/api/v1/audit/records", params={"action": "sharing.case."}, headers=admin).json()["items"]
    ]
    assert "sharing.case.open" in actions and "sharing.case.referred" in actions


def test_case_only_for_no_share_entries(client: Any) -> None:
    entry = published(client)
    body = {"entry_id": entry["id"], "duty": "履职", "legal_basis": "依据"}
    r = client.post(f"{SH}/cases", json=body, headers=auth(client, "mz_officer"))
    assert r.status_code == 409 and r.json()["error"]["code"] == "sharing.case_not_needed"
    own = _no_share(client)
    r = client.post(f"{SH}/cases", json={**body, "entry_id": own["id"]}, headers=auth(client, "ga_officer"))
    assert r.status_code == 403


# --- grant transfer ------------------------------------------------------------------------


def test_transfer_moves_the_grant_and_its_use(client: Any, settings: Any) -> None:
    entry, grant_id = _granted(client)
    ga, mz = auth(client, "ga_admin"), auth(client, "mz_officer")
    r = client.post(f"{SH}/grants/{grant_id}/transfer", json={"department_code": "SJ"}, headers=ga)
    assert r.status_code == 422 and r.json()["error"]["code"] == "sharing.reason_required"
    r = client.post(f"{SH}/grants/{grant_id}/transfer", json={"department_code": "NOPE", "reason": "x"}, headers=ga)
    assert r.status_code == 422 and r.json()["error"]["code"] == "sharing.department_unknown"
    r = client.post(f"{SH}/grants/{grant_id}/transfer", json={"department_code": "GA", "reason": "x"}, headers=ga)
    assert r.status_code == 422
    r = client.post(f"{SH}/grants/{grant_id}/transfer", json={"department_code": "SJ", "reason": "x"}, headers=mz)
    assert r.status_code == 403
    r = client.post(
        f"{SH}/grants/{grant_id}/transfer", json={"department_code": "SJ", "reason": "职能划转至审计局"}, headers=ga
    )
    assert r.status_code == 200, r.text
    assert r.json()["consumer_code"] == "SJ" and r.json()["items"] == ["身份证号", "姓名"]
    assert client.get(f"{SH}/grants", headers=mz).json() == []
    # authorize() follows the grant: the old consumer is refused.
    now = datetime.now(UTC)
    with session_scope(settings.database_url) as s:
        d = authorize(
            s,
            consumer=who(settings, "mz_officer"),
            entry=entry["code"],
            items=["姓名"],
            purpose="verification",
            now=now,
        )
    assert not d.allowed and d.reason == "no_grant"
    client.post(f"{SH}/grants/{grant_id}/revoke", json={"reason": "停用"}, headers=ga)
    r = client.post(f"{SH}/grants/{grant_id}/transfer", json={"department_code": "MZ", "reason": "x"}, headers=ga)
    assert r.status_code == 409 and r.json()["error"]["code"] == "sharing.transition_invalid"


# --- editing a draft -----------------------------------------------------------------------


def test_returned_draft_is_edited_and_resubmitted(client: Any) -> None:
    entry = published(client)
    mz, admin = auth(client, "mz_officer"), auth(client, "admin")
    client.put(f"{SH}/settings", json={"compliance_review": True}, headers=admin)
    app = client.post(f"{SH}/applications", json=_json(application_fields(entry["id"])), headers=mz).json()
    client.post(f"{SH}/applications/{app['id']}/submit", json={"accept_commitment": True}, headers=mz)
    r = client.patch(f"{SH}/applications/{app['id']}", json={"purpose": "x"}, headers=mz)
    assert r.status_code == 409  # under review: not editable
    r = client.post(
        f"{SH}/applications/{app['id']}/review", json={"decision": "return", "reason": "依据不充分"}, headers=admin
    )
    assert r.json()["status"] == "draft"
    r = client.patch(f"{SH}/applications/{app['id']}", json={"items": ["不存在"]}, headers=mz)
    assert r.status_code == 422 and r.json()["error"]["code"] == "sharing.item_unknown"
    r = client.patch(
        f"{SH}/applications/{app['id']}",
        json={"legal_basis": "《社会救助暂行办法》第十一条、第十二条", "items": ["姓名"]},
        headers=mz,
    )
    assert r.status_code == 200, r.text
    assert r.json()["items"] == ["姓名"] and "第十二条" in r.json()["legal_basis"]
    assert r.json()["purpose"] == app["purpose"]  # untouched fields keep their value
    r = client.patch(f"{SH}/applications/{app['id']}", json={"purpose": "x"}, headers=auth(client, "ga_officer"))
    assert r.status_code in (403, 404)
    r = client.post(f"{SH}/applications/{app['id']}/submit", json={"accept_commitment": True}, headers=mz)
    assert r.json()["status"] == "compliance_review"
    history = client.get(f"{SH}/applications/{app['id']}", headers=mz).json()["history"]
    assert [h["action"] for h in history] == ["create", "submit", "review_return", "edit", "submit"]
    assert history[3]["reason"] == "修改：信息项、申请依据"


# --- masking rules -------------------------------------------------------------------------


def test_admin_masking_rules_apply_everywhere(client: Any, settings: Any) -> None:
    admin = auth(client, "admin")
    table = {r["kind"]: r for r in client.get(f"{SH}/masking-rules", headers=auth(client, "mz_officer")).json()}
    assert table["id_card"]["mode"] == "default" and table["id_card"]["example"] == "110101********1234"
    r = client.put(
        f"{SH}/masking-rules", json={"rules": {"id_card": {"mode": "keep", "head": 9, "tail": 0}}}, headers=admin
    )
    assert r.status_code == 422
    r = client.put(
        f"{SH}/masking-rules", json={"rules": {"id_card": {"mode": "keep", "head": 0, "tail": 0}}}, headers=admin
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "sharing.masking_invalid"
    r = client.put(
        f"{SH}/masking-rules",
        json={"rules": {"id_card": {"mode": "keep", "head": 3, "tail": 2}, "address": {"mode": "full"}}},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    table = {x["kind"]: x for x in r.json()}
    assert table["id_card"]["example"] == "110****34" and table["address"]["example"] == "****"
    with session_scope(settings.database_url) as s:
        rules = policy.masking_rules(s)
    row = masking.mask_row({"身份证号": "110101199003071234", "姓名": "张三"}, ["身份证号", "姓名"], rules=rules)
    assert row == {"身份证号": "110****34", "姓名": "张**"}
    # Back to the built-in rules.
    client.put(f"{SH}/masking-rules", json={"rules": {}}, headers=admin)
    with session_scope(settings.database_url) as s:
        assert masking.mask("id_card", "110101199003071234", policy.masking_rules(s)) == "110101********1234"
    records = client.get("/api/v1/audit/records", params={"action": "sharing.masking."}, headers=admin).json()
    assert len(records["items"]) == 2


# --- catalog update deadline ---------------------------------------------------------------


def test_item_change_starts_the_15_working_day_deadline(client: Any, settings: Any) -> None:
    entry = create_entry(client, publish=True)
    ga = auth(client, "ga_officer")
    # Reported on Thursday 2025-09-25: 国庆 (10-01..10-08) and the 调休 Sunday 09-28 and
    # Saturday 10-11 fall inside the 15 working days.
    now = datetime(2025, 9, 25, 2, tzinfo=UTC)
    with session_scope(settings.database_url) as s:
        e = catalog_service.report_item_change(s, settings, who(settings, "ga_officer"), entry["id"], "新增住址", now)
        due = e.update_due_at
    assert due == workdays.add_working_days(date(2025, 9, 25), 15) == date(2025, 10, 22)
    got = client.get(f"/api/v1/catalog/entries/{entry['id']}", headers=ga).json()
    assert got["update_due_at"] == "2025-10-22" and got["update_overdue"] is True
    overdue = client.get("/api/v1/catalog/update-due", params={"overdue": True}, headers=auth(client, "admin")).json()
    assert [e["id"] for e in overdue] == [entry["id"]] and overdue[0]["update_due_at"] == "2025-10-22"
    assert client.get("/api/v1/catalog/update-due", headers=auth(client, "mz_officer")).json() == []
    r = client.post(
        f"/api/v1/catalog/entries/{entry['id']}/item-change", json={"note": "x"}, headers=auth(client, "mz_officer")
    )
    assert r.status_code in (403, 404)
    # Updating the entry without touching its items keeps the flag; changing them clears it.
    body = entry_body(summary="新的摘要")
    r = client.put(f"/api/v1/catalog/entries/{entry['id']}", json={**body, "reason": "改摘要"}, headers=ga)
    assert r.status_code == 200, r.text
    assert r.json()["update_due_at"] == "2025-10-22"
    items = [*body["items"], {"name": "住址", "code": "ZZ", "data_type": "C", "length": 200, "sensitivity": "personal"}]
    r = client.put(
        f"/api/v1/catalog/entries/{entry['id']}", json={**body, "items": items, "reason": "新增住址"}, headers=ga
    )
    assert r.status_code == 200, r.text
    assert r.json()["update_due_at"] is None and r.json()["update_overdue"] is False
    # Today's report: due in the future, not overdue.
    r = client.post(f"/api/v1/catalog/entries/{entry['id']}/item-change", json={"note": "删除出生日期"}, headers=ga)
    assert r.status_code == 200 and r.json()["update_overdue"] is False
    assert date.fromisoformat(r.json()["update_due_at"]) > date.today()


def test_long_reasons_are_kept_whole_in_the_audit_trail(client: Any) -> None:
    entry = published(client)
    mz, ga, admin = auth(client, "mz_officer"), auth(client, "ga_officer"), auth(client, "admin")
    app = client.post(f"{SH}/applications", json=_json(application_fields(entry["id"])), headers=mz).json()
    client.post(f"{SH}/applications/{app['id']}/submit", json={"accept_commitment": True}, headers=mz)
    grounds = "经研究，" + "该申请所列用途与所需信息项不对应，" * 20 + "不予同意。"
    r = client.post(f"{SH}/applications/{app['id']}/decide", json={"decision": "reject", "reason": grounds}, headers=ga)
    assert r.status_code == 200, r.text
    assert r.json()["decision_reason"] == grounds
    records = client.get("/api/v1/audit/records", params={"action": "sharing.application.reject"}, headers=admin)
    record = records.json()["items"][0]
    assert len(record["reason"]) == 64 and record["reason"].endswith("…")
    assert grounds in (record["detail"] if isinstance(record["detail"], str) else str(record["detail"]))
