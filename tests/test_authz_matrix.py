"""Every API route × every role: allowed or refused, as the table below says.

A route of the OpenAPI document without a row here fails the suite, so a new
endpoint cannot ship without someone deciding who may call it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from conftest import CLIENT_ID, PASSWORD, auth, create_entry, entry_body
from identity_helpers import code_now, set_totp

ROLES = ["anonymous", "client", "auditor", "mz_officer", "ga_officer", "ga_admin", "admin"]
ALL = set(ROLES)
AUTHENTICATED = ALL - {"anonymous"}
USERS = AUTHENTICATED - {"client"}
ADMINS_OF_GA = {"admin", "ga_admin"}
EDITORS_OF_GA = {"admin", "ga_admin", "ga_officer"}
EDITORS = EDITORS_OF_GA | {"mz_officer"}

Request = dict[str, Any]
Builder = Callable[[Any, dict[str, Any]], Request]


def _draft(client: Any) -> dict[str, Any]:
    return create_entry(client)


def _user_id(client: Any, username: str) -> int:
    users = client.get("/api/v1/users", headers=auth(client, "admin")).json()
    return next(u["id"] for u in users if u["username"] == username)


def _totp_everyone(client: Any, enabled: bool) -> None:
    """Every user gets the same TOTP secret (tokens are fetched first: with TOTP on,
    a login would need a code)."""
    for role in ROLES[1:]:
        auth(client, role)
    set_totp(client, enabled=enabled)


def _pending(client: Any) -> dict[str, Any]:
    e = create_entry(client)
    client.post(f"/api/v1/catalog/entries/{e['id']}/submit", headers=auth(client, "ga_officer"))
    return e


AUDIT_READERS = {"auditor", "admin", "ga_admin"}


def _audit_record(client: Any) -> int:
    """A record about 公安局 (in GA's admin's scope); returns its sequence number."""
    from datatong.audit.service import Event, append
    from datatong.db import engine_for

    event = Event(
        actor_kind="user",
        actor="ga_officer",
        action="catalog.entry.update",
        actor_department="GA",
        subject_department="GA",
        resource="GA-001",
    )
    with engine_for(client.app.state.settings.database_url).begin() as conn:
        return append(conn, [event])


IMPORT_CSV = (
    "信息资源名称,信息资源分类代码,摘要,信息资源格式分类,共享类型,共享方式,更新周期,信息项名称,数据类型,长度\n"
    "户籍人口基本信息,101,全市户籍人口基本信息,数据库,无条件共享,共享平台,每日,身份证号,C,18\n"
).encode()


# Sharing (datatong/sharing): a 有条件共享 entry of 公安局, an application of 民政局 moved
# to the state a route needs, and grants of it.
SH = "/api/v1/sharing"
EXS = "/api/v1/exchange/sources"
XSUB = "/api/v1/exchange/subscriptions"
MZ_AND_ADMIN = {"client", "mz_officer", "admin"}
CONSUMERS = {"mz_officer"}
SHARING_USERS = {"admin", "mz_officer", "ga_officer", "ga_admin"}
PROVIDERS_OF_GA = {"ga_officer", "ga_admin"}


def _sh_body(client: Any) -> dict[str, Any]:
    from datetime import date, timedelta

    entry = create_entry(client, publish=True)
    return {
        "entry_id": entry["id"],
        "purpose_kind": "verification",
        "purpose": "低保资格核验",
        "legal_basis": "《社会救助暂行办法》",
        "items": ["身份证号", "姓名"],
        "period_start": date.today().isoformat(),
        "period_end": (date.today() + timedelta(days=365)).isoformat(),
        "rows_per_day": 100,
        "system_name": "低保审核系统",
    }


def _sh_app(client: Any, state: str = "draft", review: bool = False) -> int:
    if review:
        client.put(f"{SH}/settings", json={"compliance_review": True}, headers=auth(client, "admin"))
    mz, ga = auth(client, "mz_officer"), auth(client, "ga_admin")
    r = client.post(f"{SH}/applications", json=_sh_body(client), headers=mz)
    assert r.status_code == 201, r.text
    app_id = int(r.json()["id"])
    path = [
        ("submit", mz, {"accept_commitment": True}),
        ("decide", ga, {"decision": "reject", "reason": "无依据"}),
        ("negotiate", mz, {"reason": "请协商"}),
        ("escalate", mz, {"reason": "协商未果"}),
    ]
    steps = {"draft": 0, "submitted": 1, "rejected": 2, "negotiation": 3, "coordination": 4, "approved": 1}[state]
    for action, headers, payload in path[:steps]:
        r = client.post(f"{SH}/applications/{app_id}/{action}", json=payload, headers=headers)
        assert r.status_code == 200, r.text
    if state == "approved":
        r = client.post(f"{SH}/applications/{app_id}/decide", json={"decision": "approve"}, headers=ga)
        assert r.status_code == 200, r.text
    return app_id


def _sh_grant(client: Any, suspended: bool = False) -> int:
    app_id = _sh_app(client, "approved")
    grant_id = int(client.get(f"{SH}/applications/{app_id}", headers=auth(client, "mz_officer")).json()["grant_id"])
    if suspended:
        r = client.post(f"{SH}/grants/{grant_id}/suspend", json={"reason": "核查"}, headers=auth(client, "ga_admin"))
        assert r.status_code == 200, r.text
    return grant_id


def _sh_renewal(client: Any) -> dict[str, Any]:
    from datetime import date, timedelta

    return {
        "path": {"grant_id": _sh_grant(client)},
        "json": {"valid_to": (date.today() + timedelta(days=800)).isoformat()},
    }


# (method, path) -> (roles allowed, request builder)
MATRIX: dict[tuple[str, str], tuple[set[str], Builder]] = {
    ("POST", "/api/v1/auth/token"): (ALL, lambda c, w: {"json": {"username": "ga_officer", "password": PASSWORD}}),
    ("POST", "/api/v1/auth/client-token"): (
        ALL,
        lambda c, w: {"json": {"client_id": CLIENT_ID, "client_secret": PASSWORD}},
    ),
    ("GET", "/api/v1/me"): (AUTHENTICATED, lambda c, w: {}),
    # One's own second factor and password: users only (an application has neither).
    ("GET", "/api/v1/me/totp"): (USERS, lambda c, w: {}),
    ("POST", "/api/v1/me/totp"): (USERS, lambda c, w: {}),
    ("POST", "/api/v1/me/totp/confirm"): (
        USERS,
        lambda c, w: (_totp_everyone(c, enabled=False), {"json": {"code": code_now()}})[1],
    ),
    ("DELETE", "/api/v1/me/totp"): (
        USERS,
        lambda c, w: (_totp_everyone(c, enabled=True), {"json": {"password": PASSWORD, "code": code_now()}})[1],
    ),
    ("POST", "/api/v1/me/password"): (
        USERS,
        lambda c, w: {"json": {"current_password": PASSWORD, "new_password": "An0ther!secret"}},
    ),
    ("GET", "/api/v1/security/policy"): ({"admin"}, lambda c, w: {}),
    ("PUT", "/api/v1/security/policy"): ({"admin"}, lambda c, w: {"json": {"totp_required_roles": ["dept_admin"]}}),
    ("GET", "/api/v1/departments"): (AUTHENTICATED, lambda c, w: {}),
    ("POST", "/api/v1/departments"): (
        {"admin"},
        lambda c, w: {"json": {"code": "NEW", "name": "新部门", "level": "city"}},
    ),
    ("GET", "/api/v1/departments/{department_id}"): (
        AUTHENTICATED,
        lambda c, w: {"path": {"department_id": w["departments"]["GA"]}},
    ),
    ("PATCH", "/api/v1/departments/{department_id}"): (
        ADMINS_OF_GA,
        lambda c, w: {"path": {"department_id": w["departments"]["GA"]}, "json": {"contact": "1"}},
    ),
    ("GET", "/api/v1/users"): (ADMINS_OF_GA, lambda c, w: {}),
    ("POST", "/api/v1/users"): (
        ADMINS_OF_GA,
        lambda c, w: {
            "json": {
                "username": "newbie",
                "display_name": "新人",
                "password": "Str0ng!pass",
                "role": "data_officer",
                "department_code": "GA",
            }
        },
    ),
    ("GET", "/api/v1/users/{user_id}"): (ADMINS_OF_GA, lambda c, w: {"path": {"user_id": _user_id(c, "ga_officer")}}),
    ("PATCH", "/api/v1/users/{user_id}"): (
        ADMINS_OF_GA,
        lambda c, w: {"path": {"user_id": _user_id(c, "ga_officer")}, "json": {"display_name": "改"}},
    ),
    ("GET", "/api/v1/clients"): (ADMINS_OF_GA, lambda c, w: {}),
    ("POST", "/api/v1/clients"): (ADMINS_OF_GA, lambda c, w: {"json": {"name": "系统", "department_code": "GA"}}),
    ("GET", "/api/v1/catalog/entries"): (ALL, lambda c, w: {"params": {"q": "人口"}}),
    ("POST", "/api/v1/catalog/entries"): (EDITORS, lambda c, w: {"json": entry_body()}),
    ("GET", "/api/v1/catalog/entries/{entry_id}"): (
        EDITORS_OF_GA,
        lambda c, w: {"path": {"entry_id": _draft(c)["id"]}},
    ),
    ("GET", "/api/v1/catalog/by-code/{code}"): (EDITORS_OF_GA, lambda c, w: {"path": {"code": _draft(c)["code"]}}),
    ("PUT", "/api/v1/catalog/entries/{entry_id}"): (
        EDITORS_OF_GA,
        lambda c, w: {"path": {"entry_id": _draft(c)["id"]}, "json": entry_body(summary="新摘要", reason="改")},
    ),
    ("GET", "/api/v1/catalog/entries/{entry_id}/versions"): (
        EDITORS_OF_GA,
        lambda c, w: {"path": {"entry_id": _draft(c)["id"]}},
    ),
    ("POST", "/api/v1/catalog/entries/{entry_id}/submit"): (
        EDITORS_OF_GA,
        lambda c, w: {"path": {"entry_id": _draft(c)["id"]}},
    ),
    ("POST", "/api/v1/catalog/entries/{entry_id}/revoke"): (
        EDITORS_OF_GA,
        lambda c, w: {"path": {"entry_id": create_entry(c, publish=True)["id"]}, "json": {"reason": "停止采集"}},
    ),
    ("POST", "/api/v1/catalog/entries/{entry_id}/review"): (
        {"admin"},
        lambda c, w: {"path": {"entry_id": _pending(c)["id"]}, "json": {"decision": "approve"}},
    ),
    ("GET", "/api/v1/catalog/dcat.jsonld"): (ALL, lambda c, w: {}),
    ("GET", "/api/v1/catalog/entries/{entry_id}/dcat.jsonld"): (
        EDITORS_OF_GA,
        lambda c, w: {"path": {"entry_id": _draft(c)["id"]}},
    ),
    # The CKAN API answers in CKAN's error shape, so its rows use calls every role may make;
    # tests/test_ckan.py covers who sees what through it.
    ("GET", "/api/3/action/{action}"): (
        ALL,
        lambda c, w: {"path": {"action": "package_search"}, "params": {"q": "人口"}},
    ),
    ("POST", "/api/3/action/{action}"): (
        ALL,
        lambda c, w: {"path": {"action": "package_search"}, "json": {"q": "人口"}},
    ),
    ("GET", "/api/v1/catalog/template.xlsx"): (ALL, lambda c, w: {}),
    ("GET", "/.well-known/datatong-keys"): (ALL, lambda c, w: {}),
    ("GET", "/api/v1/exchange/ping"): (ALL, lambda c, w: {}),
    ("POST", "/api/v1/catalog/import"): (EDITORS, lambda c, w: {"files": {"file": ("目录.csv", IMPORT_CSV)}}),
    ("GET", "/api/v1/catalog/export"): (ALL, lambda c, w: {"params": {"format": "csv"}}),
    ("GET", "/api/v1/catalog/classes"): (ALL, lambda c, w: {}),
    ("POST", "/api/v1/catalog/classes"): ({"admin"}, lambda c, w: {"json": {"code": "101009", "name": "x"}}),
    ("PATCH", "/api/v1/catalog/classes/{class_id}"): (
        {"admin"},
        lambda c, w: {"path": {"class_id": 1}, "json": {"description": "说明"}},
    ),
    # The audit trail: auditors and platform admins read all of it, a department admin the
    # records about their department (scope: tests/test_audit_api.py).
    ("GET", "/api/v1/audit/records"): (AUDIT_READERS, lambda c, w: {"params": {"action": "catalog."}}),
    ("GET", "/api/v1/audit/records/{seq}"): (AUDIT_READERS, lambda c, w: {"path": {"seq": _audit_record(c)}}),
    ("GET", "/api/v1/audit/export"): (AUDIT_READERS, lambda c, w: {"params": {"format": "csv"}}),
    # Sharing: the consumer (民政局's officer) files, the provider (公安局) answers and manages
    # grants, the platform admin reviews and coordinates (rules: tests/test_sharing_*.py).
    ("POST", f"{SH}/applications"): (CONSUMERS, lambda c, w: {"json": _sh_body(c)}),
    ("GET", f"{SH}/applications"): (SHARING_USERS, lambda c, w: {}),
    ("GET", f"{SH}/applications/{{application_id}}"): (
        SHARING_USERS,
        lambda c, w: {"path": {"application_id": _sh_app(c, "submitted")}},
    ),
    ("POST", f"{SH}/applications/{{application_id}}/submit"): (
        CONSUMERS,
        lambda c, w: {"path": {"application_id": _sh_app(c)}, "json": {"accept_commitment": True}},
    ),
    ("POST", f"{SH}/applications/{{application_id}}/withdraw"): (
        CONSUMERS,
        lambda c, w: {"path": {"application_id": _sh_app(c, "submitted")}, "json": {}},
    ),
    ("POST", f"{SH}/applications/{{application_id}}/review"): (
        {"admin"},
        lambda c, w: {"path": {"application_id": _sh_app(c, "submitted", review=True)}, "json": {"decision": "pass"}},
    ),
    ("POST", f"{SH}/applications/{{application_id}}/decide"): (
        PROVIDERS_OF_GA,
        lambda c, w: {"path": {"application_id": _sh_app(c, "submitted")}, "json": {"decision": "approve"}},
    ),
    ("POST", f"{SH}/applications/{{application_id}}/negotiate"): (
        CONSUMERS,
        lambda c, w: {"path": {"application_id": _sh_app(c, "rejected")}, "json": {"reason": "请协商"}},
    ),
    ("POST", f"{SH}/applications/{{application_id}}/escalate"): (
        CONSUMERS,
        lambda c, w: {"path": {"application_id": _sh_app(c, "negotiation")}, "json": {"reason": "协商未果"}},
    ),
    ("POST", f"{SH}/applications/{{application_id}}/coordinate"): (
        {"admin"},
        lambda c, w: {
            "path": {"application_id": _sh_app(c, "coordination")},
            "json": {"decision": "uphold", "reason": "不宜共享"},
        },
    ),
    ("POST", f"{SH}/unconditional-grants"): (
        CONSUMERS,
        lambda c, w: {
            "json": {
                "entry_id": create_entry(c, publish=True, share_type="unconditional", share_condition=None)["id"],
                "purpose_kind": "work_reference",
            }
        },
    ),
    ("GET", f"{SH}/grants"): (SHARING_USERS | {"client"}, lambda c, w: {}),
    ("GET", f"{SH}/grants/{{grant_id}}"): (
        SHARING_USERS | {"client"},
        lambda c, w: {"path": {"grant_id": _sh_grant(c)}},
    ),
    ("POST", f"{SH}/grants/{{grant_id}}/suspend"): (
        PROVIDERS_OF_GA,
        lambda c, w: {"path": {"grant_id": _sh_grant(c)}, "json": {"reason": "核查"}},
    ),
    ("POST", f"{SH}/grants/{{grant_id}}/resume"): (
        PROVIDERS_OF_GA,
        lambda c, w: {"path": {"grant_id": _sh_grant(c, suspended=True)}, "json": {}},
    ),
    ("POST", f"{SH}/grants/{{grant_id}}/revoke"): (
        PROVIDERS_OF_GA,
        lambda c, w: {"path": {"grant_id": _sh_grant(c)}, "json": {"reason": "违规使用"}},
    ),
    ("POST", f"{SH}/grants/{{grant_id}}/renew"): (PROVIDERS_OF_GA, lambda c, w: _sh_renewal(c)),
    ("PUT", f"{SH}/settings"): ({"admin"}, lambda c, w: {"json": {"compliance_review": False}}),
    # The work calendar: everyone signed in reads it, only the platform admin enters a year.
    ("GET", f"{SH}/calendar"): (AUTHENTICATED, lambda c, w: {}),
    ("GET", f"{SH}/calendar/{{year}}"): (AUTHENTICATED, lambda c, w: {"path": {"year": 2026}}),
    ("PUT", f"{SH}/calendar/{{year}}"): (
        {"admin"},
        lambda c, w: {"path": {"year": 2031}, "json": {"notice": "测试通知", "holidays": ["2031-01-01"]}},
    ),
    ("DELETE", f"{SH}/calendar/{{year}}"): ({"admin"}, lambda c, w: _calendar_year(c)),
    # Data sources of exchange: the provider department's editors and the platform admin
    # see and change them; anyone else gets 404 (the list is empty for them).
    ("POST", EXS): (
        EDITORS_OF_GA,
        lambda c, w: {
            "json": {"entry_id": create_entry(c, publish=True)["id"], "kind": "file", "key_item": "身份证号"}
        },
    ),
    ("GET", EXS): (AUTHENTICATED, lambda c, w: {}),
    ("GET", f"{EXS}/{{source_id}}"): (EDITORS_OF_GA, lambda c, w: {"path": {"source_id": _ex_source(c)}}),
    ("PATCH", f"{EXS}/{{source_id}}"): (
        EDITORS_OF_GA,
        lambda c, w: {"path": {"source_id": _ex_source(c)}, "json": {"enabled": False}},
    ),
    ("DELETE", f"{EXS}/{{source_id}}"): (EDITORS_OF_GA, lambda c, w: {"path": {"source_id": _ex_source(c)}}),
    ("POST", f"{EXS}/{{source_id}}/test"): (
        EDITORS_OF_GA,
        lambda c, w: {"path": {"source_id": _ex_source(c)}},
    ),
    ("POST", f"{EXS}/{{source_id}}/file"): (
        EDITORS_OF_GA,
        lambda c, w: {
            "path": {"source_id": _ex_source(c)},
            "files": {"file": ("p.csv", "身份证号,姓名,出生日期\n110101199003071235,张三,1990-03-07\n".encode())},
        },
    ),
    # Exchange calls: the holders of a grant — 民政局's system and its officers (the grant
    # is department-wide); everyone else is refused (deny by default).
    ("POST", "/api/v1/exchange/entries/{entry_code}/query"): (
        {"client", "mz_officer"},
        lambda c, w: _ex_call(c, {"limit": 5}),
    ),
    ("POST", "/api/v1/exchange/entries/{entry_code}/verify"): (
        {"client", "mz_officer"},
        lambda c, w: _ex_call(c, {"subjects": [{"key": "110101199003071235", "claims": {"姓名": "张三"}}]}),
    ),
    ("GET", "/api/v1/exchange/entries/{entry_code}/export"): (
        {"client", "mz_officer"},
        lambda c, w: {k: v for k, v in _ex_call(c, {}).items() if k != "json"} | {"params": {"format": "csv"}},
    ),
    # The signed manifest of an export: the department that made it, the platform admin and
    # auditors; anyone else gets 404.
    ("GET", "/api/v1/exchange/exports/{export_id}/manifest"): (
        {"client", "mz_officer", "admin", "auditor"},
        lambda c, w: {"path": {"export_id": _ex_export(c)}},
    ),
    # Subscriptions: the holders of a grant subscribe (民政局's system and officers); the
    # subscribing department and the platform admin see and manage it; the feed is an
    # exchange call (authorize: the admin holds no grant); anyone else gets 404.
    ("POST", XSUB): ({"client", "mz_officer"}, lambda c, w: _ex_sub_entry(c)),
    ("GET", XSUB): (AUTHENTICATED, lambda c, w: {}),
    ("GET", f"{XSUB}/{{subscription_id}}"): (MZ_AND_ADMIN, lambda c, w: _ex_sub(c)),
    ("DELETE", f"{XSUB}/{{subscription_id}}"): (MZ_AND_ADMIN, lambda c, w: _ex_sub(c)),
    ("POST", f"{XSUB}/{{subscription_id}}/pause"): (MZ_AND_ADMIN, lambda c, w: _ex_sub(c)),
    ("POST", f"{XSUB}/{{subscription_id}}/resume"): (MZ_AND_ADMIN, lambda c, w: _ex_sub(c)),
    ("POST", f"{XSUB}/{{subscription_id}}/replay"): (MZ_AND_ADMIN, lambda c, w: _ex_sub(c) | {"json": {"offset": 0}}),
    ("GET", f"{XSUB}/{{subscription_id}}/dead-letters"): (MZ_AND_ADMIN, lambda c, w: _ex_sub(c)),
    ("GET", f"{XSUB}/{{subscription_id}}/changes"): ({"client", "mz_officer"}, lambda c, w: _ex_sub(c)),
    # ROWS: inbox and webhooks
    # The inbox: every signed-in person reads their own; a message is marked by its owner only.
    ("GET", "/api/v1/inbox"): (USERS, lambda c, w: {"params": {"unread_only": True}}),
    ("POST", "/api/v1/inbox/read-all"): (USERS, lambda c, w: {}),
    ("POST", "/api/v1/inbox/{message_id}/read"): ({"ga_admin"}, lambda c, w: {"path": {"message_id": _ga_message(c)}}),
    # A department's webhook: its own department admin or the platform admin.
    ("GET", f"{SH}/webhooks/{{department_code}}"): (ADMINS_OF_GA, lambda c, w: _ga_webhook(c)),
    ("PUT", f"{SH}/webhooks/{{department_code}}"): (
        ADMINS_OF_GA,
        lambda c, w: {"path": {"department_code": "GA"}, "json": {"url": "https://hooks.example.org/datatong"}},
    ),
    ("DELETE", f"{SH}/webhooks/{{department_code}}"): (ADMINS_OF_GA, lambda c, w: _ga_webhook(c)),
    ("POST", f"{SH}/webhooks/{{department_code}}/test"): (ADMINS_OF_GA, lambda c, w: _ga_webhook(c)),
    # ROWS: supply-demand needs
    # Supply–demand docking: departments post needs, the platform admin routes them, the
    # department routed to answers; the consumer (or the admin) closes (tests/test_sharing_needs.py).
    ("POST", f"{SH}/needs"): (SHARING_USERS - {"admin"}, lambda c, w: {"json": _need_body()}),
    ("GET", f"{SH}/needs"): (SHARING_USERS, lambda c, w: {}),
    ("GET", f"{SH}/needs/{{need_id}}"): (SHARING_USERS, lambda c, w: {"path": {"need_id": _need(c, routed=True)}}),
    ("POST", f"{SH}/needs/{{need_id}}/route"): (
        {"admin"},
        lambda c, w: {"path": {"need_id": _need(c)}, "json": {"department_code": "GA"}},
    ),
    ("POST", f"{SH}/needs/{{need_id}}/answer"): (
        PROVIDERS_OF_GA,
        lambda c, w: {"path": {"need_id": _need(c, routed=True)}, "json": {"answer": "cannot", "text": "无此数据"}},
    ),
    ("POST", f"{SH}/needs/{{need_id}}/close"): (
        CONSUMERS | {"admin"},
        lambda c, w: {"path": {"need_id": _need(c)}, "json": {"reason": "不再需要"}},
    ),
    # ROWS: coordination cases, transfers, masking rules, catalog update deadline
    ("PATCH", f"{SH}/applications/{{application_id}}"): (
        CONSUMERS,
        lambda c, w: {"path": {"application_id": _sh_app(c)}, "json": {"purpose": "修改后的用途"}},
    ),
    ("POST", f"{SH}/grants/{{grant_id}}/transfer"): (
        PROVIDERS_OF_GA | {"admin"},
        lambda c, w: {"path": {"grant_id": _sh_grant(c)}, "json": {"department_code": "SJ", "reason": "职能划转"}},
    ),
    ("POST", f"{SH}/cases"): (CONSUMERS, lambda c, w: {"json": _case_body(c)}),
    ("GET", f"{SH}/cases"): (SHARING_USERS, lambda c, w: {}),
    ("GET", f"{SH}/cases/{{case_id}}"): (SHARING_USERS, lambda c, w: {"path": {"case_id": _case(c)}}),
    ("POST", f"{SH}/cases/{{case_id}}/resolve"): (
        {"admin"},
        lambda c, w: {"path": {"case_id": _case(c)}, "json": {"decision": "upheld", "resolution": "涉密"}},
    ),
    ("GET", f"{SH}/masking-rules"): (USERS, lambda c, w: {}),
    ("PUT", f"{SH}/masking-rules"): ({"admin"}, lambda c, w: {"json": {"rules": {"text": {"mode": "full"}}}}),
    ("POST", "/api/v1/catalog/entries/{entry_id}/item-change"): (
        EDITORS_OF_GA,
        lambda c, w: {"path": {"entry_id": create_entry(c, publish=True)["id"]}, "json": {"note": "新增信息项"}},
    ),
    ("GET", "/api/v1/catalog/update-due"): (EDITORS, lambda c, w: {}),
}


def _ex_source(client: Any) -> int:
    """A file data source of a published 公安局 entry (no network needed to test it)."""
    entry = create_entry(client, publish=True)
    body = {"entry_id": entry["id"], "kind": "file", "key_item": "身份证号"}
    r = client.post(EXS, json=body, headers=auth(client, "ga_officer"))
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _ex_call(client: Any, body: dict[str, Any]) -> Request:
    """A file source of a published 公安局 entry with one row, granted to 民政局."""
    source = _ex_source(client)
    csv = "身份证号,姓名,出生日期\n110101199003071235,张三,1990-03-07\n".encode()
    r = client.post(f"{EXS}/{source}/file", files={"file": ("p.csv", csv)}, headers=auth(client, "ga_officer"))
    assert r.status_code < 400, r.text
    entry = client.get(f"{EXS}/{source}", headers=auth(client, "ga_officer")).json()["entry_id"]
    code = client.get(f"/api/v1/catalog/entries/{entry}", headers=auth(client, "ga_officer")).json()["code"]
    app = _sh_body(client) | {"entry_id": entry}
    mz, ga = auth(client, "mz_officer"), auth(client, "ga_officer")
    app_id = client.post(f"{SH}/applications", json=app, headers=mz).json()["id"]
    client.post(f"{SH}/applications/{app_id}/submit", json={"accept_commitment": True}, headers=mz)
    client.post(f"{SH}/applications/{app_id}/decide", json={"decision": "approve"}, headers=ga).raise_for_status()
    context = {
        "X-Datatong-System": CLIENT_ID,
        "X-Datatong-Operator": "wang",
        "X-Datatong-Purpose": "verification",
        "X-Datatong-Case": "MZ-1",
    }
    return {"path": {"entry_code": code}, "json": body, "headers": context}


def _ex_export(client: Any) -> str:
    """A finished export of 民政局 (its officer); returns the export id."""
    req = _ex_call(client, {})
    url = "/api/v1/exchange/entries/{entry_code}/export".format(**req["path"])
    r = client.get(url, params={"format": "csv"}, headers=req["headers"] | auth(client, "mz_officer"))
    assert r.status_code == 200, r.text
    return str(r.headers["X-Datatong-Export"])


def _ex_sub_entry(client: Any) -> Request:
    """A published 公安局 entry on a SQLite provider with change tracking (an increasing
    id), granted to 民政局: the body and context of subscribing to it."""
    import sqlite3
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp(prefix="dt-matrix-")) / "ga.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE person (id INTEGER PRIMARY KEY, sfzh TEXT, xm TEXT, csrq TEXT)")
    entry = create_entry(client, publish=True)
    source = {
        "entry_id": entry["id"],
        "kind": "sql",
        "url": f"sqlite:///{path}",
        "table_name": "person",
        "key_item": "身份证号",
        "fields": {"身份证号": "sfzh", "姓名": "xm", "出生日期": "csrq"},
        "change_column": "id",
        "change_kind": "increasing_id",
    }
    client.post(EXS, json=source, headers=auth(client, "admin")).raise_for_status()
    app = _sh_body(client) | {"entry_id": entry["id"]}
    mz, ga = auth(client, "mz_officer"), auth(client, "ga_officer")
    app_id = client.post(f"{SH}/applications", json=app, headers=mz).json()["id"]
    client.post(f"{SH}/applications/{app_id}/submit", json={"accept_commitment": True}, headers=mz)
    client.post(f"{SH}/applications/{app_id}/decide", json={"decision": "approve"}, headers=ga).raise_for_status()
    context = {
        "X-Datatong-System": CLIENT_ID,
        "X-Datatong-Operator": "wang",
        "X-Datatong-Purpose": "verification",
        "X-Datatong-Case": "MZ-1",
    }
    return {"json": {"entry": entry["code"], "mode": "feed"}, "headers": context}


def _ex_sub(client: Any) -> Request:
    """A feed subscription of 民政局's system; the request keeps the context headers."""
    req = _ex_sub_entry(client)
    r = client.post(XSUB, json=req["json"], headers=req["headers"] | auth(client, "client"))
    assert r.status_code == 201, r.text
    return {"path": {"subscription_id": r.json()["id"]}, "headers": req["headers"]}


# BUILDERS: inbox and webhooks
def _ga_message(client: Any) -> int:
    """A message in GA's admin's inbox (a submitted application of 民政局)."""
    _sh_app(client, "submitted")
    items = client.get("/api/v1/inbox", headers=auth(client, "ga_admin")).json()["items"]
    return int(items[0]["id"])


def _ga_webhook(client: Any) -> Request:
    """公安局's webhook, pointing at a closed local port (a ping fails fast, harmlessly)."""
    body = {"url": "http://127.0.0.1:9/datatong"}
    client.put(f"{SH}/webhooks/GA", json=body, headers=auth(client, "ga_admin")).raise_for_status()
    return {"path": {"department_code": "GA"}}


# BUILDERS: supply-demand needs


def _need_body() -> dict[str, Any]:
    return {
        "title": "新生儿出生登记信息",
        "description": "低保家庭新增人口核验",
        "items": ["新生儿姓名", "出生日期"],
        "purpose_kind": "verification",
        "purpose": "低保核验",
    }


def _need(client: Any, routed: bool = False) -> int:
    """A need of 民政局, open or routed to 公安局."""
    r = client.post(f"{SH}/needs", json=_need_body(), headers=auth(client, "mz_officer"))
    assert r.status_code == 201, r.text
    need_id = int(r.json()["id"])
    if routed:
        r = client.post(f"{SH}/needs/{need_id}/route", json={"department_code": "GA"}, headers=auth(client, "admin"))
        assert r.status_code == 200, r.text
    return need_id


# BUILDERS: coordination cases, transfers, masking rules, catalog update deadline
def _case_body(client: Any) -> dict[str, Any]:
    entry = create_entry(client, publish=True, share_type="none", no_share_basis="涉及国家秘密", share_condition=None)
    return {"entry_id": entry["id"], "duty": "最低生活保障审核", "legal_basis": "《社会救助暂行办法》"}


def _case(client: Any) -> int:
    r = client.post(f"{SH}/cases", json=_case_body(client), headers=auth(client, "mz_officer"))
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _calendar_year(client: Any) -> Request:
    body = {"notice": "测试通知", "holidays": ["2032-01-01"]}
    client.put(f"{SH}/calendar/2032", json=body, headers=auth(client, "admin")).raise_for_status()
    return {"path": {"year": 2032}}


def api_routes(app: Any) -> set[tuple[str, str]]:
    routes = set()
    for path, ops in app.openapi()["paths"].items():
        if path.startswith(("/api/", "/.well-known/")):
            routes |= {(m.upper(), path) for m in ops}
    return routes


def test_every_api_route_has_a_row(app):
    missing = api_routes(app) - set(MATRIX)
    assert not missing, f"add these routes to MATRIX with the roles allowed: {sorted(missing)}"
    stale = set(MATRIX) - api_routes(app)
    assert not stale, f"MATRIX names routes that no longer exist: {sorted(stale)}"


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("route", sorted(MATRIX), ids=lambda r: f"{r[0]} {r[1]}")
def test_route_role(client, world, route, role):
    method, path = route
    allowed, build = MATRIX[route]
    req = build(client, world)
    url = path.format(**req.pop("path", {}))
    headers = {**req.pop("headers", {}), **({} if role == "anonymous" else auth(client, role))}
    r = client.request(method, url, headers=headers, **req)
    if role in allowed:
        assert r.status_code < 400, f"{role} should be allowed: {r.status_code} {r.text[:300]}"
    else:
        assert r.status_code in (401, 403, 404), f"{role} should be refused: {r.status_code} {r.text[:300]}"
        body = r.json()
        # Exchange refusals name their reason (exchange.no_grant, …) instead of "forbidden".
        code = body["error"]["code"]
        assert code in ("unauthenticated", "forbidden", "not_found") or (
            r.status_code == 403 and code.startswith("exchange.")
        ), body
        assert body["error"]["message"] and body["error"]["message_en"]
