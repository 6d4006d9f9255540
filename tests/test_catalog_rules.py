"""Every 编目 rule answers with a clear, stable error and writes nothing."""

from __future__ import annotations

import pytest
from conftest import auth, create_entry, entry_body

from datatong.db import session_scope

ITEMS_OK = entry_body()["items"]


def _count(client, headers) -> int:
    return client.get("/api/v1/catalog/entries", params={"status": "draft"}, headers=headers).json()["total"]


@pytest.mark.parametrize(
    ("overrides", "code", "field", "fragment"),
    [
        (
            {"share_type": "none", "no_share_basis": None, "share_method": None},
            "catalog.no_share_basis_required",
            "no_share_basis",
            "依据",
        ),
        (
            {"share_type": "conditional", "share_condition": "  "},
            "catalog.share_condition_required",
            "share_condition",
            "共享条件",
        ),
        ({"items": []}, "catalog.items_required", "items", "至少需要一个信息项"),
        ({"items": [{"name": "姓名", "data_type": "C"}]}, "catalog.item_length_required", "items[0].length", "长度"),
        ({"items": [{"name": "金额", "data_type": "N"}]}, "catalog.item_length_required", "items[0].length", "长度"),
        (
            {"share_type": "unconditional", "share_method": None},
            "catalog.share_method_required",
            "share_method",
            "共享方式",
        ),
        ({"share_type": "有条件"}, "catalog.share_type_invalid", "share_type", "共享类型"),
        (
            {"items": [{"name": "照片", "data_type": "X", "length": 1}]},
            "catalog.item_type_invalid",
            "items[0].data_type",
            "数据类型",
        ),
        ({"items": [*ITEMS_OK, ITEMS_OK[0]]}, "catalog.item_name_duplicate", "items[3].name", "重复"),
        ({"update_cycle": "hourly"}, "catalog.update_cycle_invalid", "update_cycle", "更新周期"),
        ({"format_category": "pdf"}, "catalog.format_invalid", "format_category", "格式"),
        ({"name": " "}, "catalog.name_required", "name", "名称"),
        ({"class_code": "999"}, "catalog.class_unknown", "class_code", "分类"),
        ({"class_code": "1"}, "catalog.class_too_broad", "class_code", "项"),
    ],
)
def test_rule_errors_are_clear(client, overrides, code, field, fragment):
    headers = auth(client, "ga_officer")
    before = _count(client, headers)
    r = client.post("/api/v1/catalog/entries", json=entry_body(**overrides), headers=headers)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == code
    assert err["field"] == field
    assert fragment in err["message"]
    assert err["message_en"]
    assert _count(client, headers) == before  # nothing half-written


def test_all_rule_errors_are_listed_at_once(client):
    body = entry_body(share_type="conditional", share_condition=None, items=[{"name": "姓名", "data_type": "C"}])
    r = client.post("/api/v1/catalog/entries", json=body, headers=auth(client, "ga_officer"))
    codes = [d["code"] for d in r.json()["error"]["details"]]
    assert codes == ["catalog.share_condition_required", "catalog.item_length_required"]


def test_fixed_width_types_get_their_length(client):
    entry = create_entry(
        client,
        items=[
            {"name": "出生日期", "data_type": "D"},
            {"name": "是否有效", "data_type": "L"},
            {"name": "备注", "data_type": "M"},
        ],
    )
    assert [i["length"] for i in entry["items"]] == [8, 1, None]


def test_not_shared_entry_drops_share_method(client):
    entry = create_entry(
        client, share_type="none", no_share_basis="《中华人民共和国个人信息保护法》第十三条", share_method="platform"
    )
    assert entry["share_method"] is None


def test_codes_follow_the_rule_and_are_never_reused(client, app, settings):
    from datatong.catalog.models import CatalogEntry
    from datatong.db import session_scope

    a = create_entry(client)
    b = create_entry(client)
    assert a["code"] == "101-GA-000001"
    assert b["code"] == "101-GA-000002"
    with session_scope(settings.database_url) as session:  # even after deletion …
        session.delete(session.get(CatalogEntry, b["id"]))
    c = create_entry(client)
    assert c["code"] == "101-GA-000003"  # … the number is not handed out again
    other = create_entry(client, class_code="201")
    assert other["code"] == "201-GA-000001"


def test_platform_admin_may_keep_an_existing_identifier(client):
    body = entry_body(code="330100/GA-00001")
    r = client.post("/api/v1/catalog/entries", json=body, headers=auth(client, "ga_officer"))
    assert r.status_code == 403
    r = client.post("/api/v1/catalog/entries", json={**body, "provider_code": "GA"}, headers=auth(client, "admin"))
    assert r.status_code == 201, r.text
    assert r.json()["code"] == "330100/GA-00001"
    r = client.post("/api/v1/catalog/entries", json={**body, "provider_code": "GA"}, headers=auth(client, "admin"))
    assert r.json()["error"]["code"] == "catalog.code_taken"
    r = client.get("/api/v1/catalog/by-code/330100/GA-00001", headers=auth(client, "ga_officer"))
    assert r.status_code == 200


def test_officer_cannot_catalogue_for_another_department(client):
    r = client.post("/api/v1/catalog/entries", json=entry_body(provider_code="MZ"), headers=auth(client, "ga_officer"))
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "forbidden"


def test_bad_json_is_a_clear_422(client):
    r = client.post(
        "/api/v1/catalog/entries",
        content=b"{not json",
        headers={**auth(client, "ga_officer"), "content-type": "application/json"},
    )
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "validation_error"
    r = client.post("/api/v1/catalog/entries", json={"name": "x"}, headers=auth(client, "ga_officer"))
    assert r.json()["error"]["code"] == "validation_error"
    assert {d["field"] for d in r.json()["error"]["details"]} >= {"summary", "class_code"}


def test_concurrent_writers_never_get_the_same_code(client, settings):
    """Two writers creating entries at once (separate connections) get distinct codes."""
    from concurrent.futures import ThreadPoolExecutor

    from datatong.catalog.schemas import EntryIn
    from datatong.catalog.service import create_entry as create
    from datatong.orgs.models import User
    from datatong.orgs.service import principal_for

    with session_scope(settings.database_url) as session:
        who = principal_for(session.query(User).filter_by(username="ga_officer").one())

    def make(i: int) -> str:
        with session_scope(settings.database_url) as session:
            return create(session, who, EntryIn(**entry_body(name=f"并发资源{i}"))).code

    with ThreadPoolExecutor(max_workers=4) as pool:
        codes = list(pool.map(make, range(24)))
    assert len(set(codes)) == 24
    assert sorted(codes) == [f"101-GA-{n:06d}" for n in range(1, 25)]
