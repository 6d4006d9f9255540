"""Life cycle (草稿 → 发布待审核 → 已发布 / 发布已驳回; 撤销), versions and visibility."""

from __future__ import annotations

from conftest import auth, create_entry, entry_body


def _act(client, entry_id, path, user, **body):
    return client.post(f"/api/v1/catalog/entries/{entry_id}/{path}", json=body or None, headers=auth(client, user))


def test_full_life_cycle_with_reasons(client):
    e = create_entry(client)
    assert e["status"] == "draft" and e["status_label"] == "草稿"
    assert _act(client, e["id"], "submit", "ga_officer").json()["status"] == "pending_publish"
    r = _act(client, e["id"], "review", "admin", decision="reject")
    assert r.status_code == 422 and r.json()["error"]["code"] == "catalog.reason_required"
    r = _act(client, e["id"], "review", "admin", decision="reject", reason="摘要过于简单")
    assert r.json()["status"] == "publish_rejected"
    assert _act(client, e["id"], "submit", "ga_officer").json()["status"] == "pending_publish"
    assert _act(client, e["id"], "review", "admin", decision="approve").json()["status"] == "published"
    r = _act(client, e["id"], "revoke", "ga_officer", reason=None)
    assert r.json()["error"]["code"] == "catalog.reason_required"
    r = _act(client, e["id"], "revoke", "ga_officer", reason="职能调整，不再采集")
    assert r.json()["status"] == "pending_revoke"
    assert _act(client, e["id"], "review", "admin", decision="approve").json()["status"] == "revoked"
    versions = client.get(f"/api/v1/catalog/entries/{e['id']}/versions", headers=auth(client, "ga_officer")).json()
    assert [v["action"] for v in versions] == [
        "approve_revoke",
        "request_revoke",
        "approve_publish",
        "submit",
        "reject_publish",
        "submit",
        "create",
    ]
    rejected = versions[4]
    assert rejected["reason"] == "摘要过于简单" and rejected["actor_name"] == "平台管理员"


def test_illegal_transitions_are_refused(client):
    e = create_entry(client)
    r = _act(client, e["id"], "review", "admin", decision="approve")
    assert r.status_code == 409 and r.json()["error"]["code"] == "catalog.transition_invalid"
    r = _act(client, e["id"], "revoke", "ga_officer", reason="x")
    assert r.status_code == 409 and "草稿" in r.json()["error"]["message"]
    _act(client, e["id"], "submit", "ga_officer")
    r = _act(client, e["id"], "submit", "ga_officer")
    assert r.status_code == 409
    r = client.put(
        f"/api/v1/catalog/entries/{e['id']}", json=entry_body(reason="改"), headers=auth(client, "ga_officer")
    )
    assert r.json()["error"]["code"] == "catalog.not_editable"


def test_only_platform_admin_reviews(client):
    e = create_entry(client)
    _act(client, e["id"], "submit", "ga_officer")
    for user in ("ga_officer", "ga_admin"):
        r = _act(client, e["id"], "review", user, decision="approve")
        assert r.status_code == 403, user
    r = _act(client, e["id"], "review", "mz_officer", decision="approve")
    assert r.status_code == 404  # not even visible to another department


def test_edit_creates_version_with_diff_and_reason(client):
    e = create_entry(client, publish=True)
    body = entry_body(summary="新的摘要", reason="补充说明采集口径")
    body["items"] = [*body["items"][:2], {"name": "户籍地址", "data_type": "C", "length": 200}]
    r = client.put(f"/api/v1/catalog/entries/{e['id']}", json=body, headers=auth(client, "ga_officer"))
    assert r.status_code == 200, r.text
    assert r.json()["version"] == e["version"] + 1
    assert r.json()["status"] == "published"
    latest = client.get(f"/api/v1/catalog/entries/{e['id']}/versions", headers=auth(client, "ga_officer")).json()[0]
    assert latest["reason"] == "补充说明采集口径"
    fields = {c["field"]: c for c in latest["changes"]}
    assert fields["summary"]["new"] == "新的摘要"
    assert fields["items.户籍地址"]["old"] is None
    assert fields["items.出生日期"]["new"] is None
    assert fields["items.户籍地址"]["label"] == "信息项“户籍地址”"


def test_edit_needs_reason_and_a_change(client):
    e = create_entry(client)
    r = client.put(
        f"/api/v1/catalog/entries/{e['id']}", json=entry_body(reason=" "), headers=auth(client, "ga_officer")
    )
    assert r.json()["error"]["code"] == "catalog.reason_required"
    r = client.put(
        f"/api/v1/catalog/entries/{e['id']}", json=entry_body(reason="无变化"), headers=auth(client, "ga_officer")
    )
    assert r.json()["error"]["code"] == "catalog.no_change"


def test_other_departments_see_only_published(client):
    draft = create_entry(client, name="机动车登记信息")
    published = create_entry(client, publish=True, name="居民身份证签发信息")
    mz = auth(client, "mz_officer")
    assert client.get(f"/api/v1/catalog/entries/{draft['id']}", headers=mz).status_code == 404
    assert client.get(f"/api/v1/catalog/entries/{published['id']}", headers=mz).status_code == 200
    assert client.get(f"/api/v1/catalog/entries/{draft['id']}/versions", headers=mz).status_code == 404
    found = client.get("/api/v1/catalog/entries", headers=mz).json()
    assert [x["id"] for x in found["results"]] == [published["id"]]
    mine = client.get("/api/v1/catalog/entries", headers=auth(client, "ga_admin")).json()
    assert {x["id"] for x in mine["results"]} == {draft["id"], published["id"]}
    # Anonymous visitors see only published entries that are open to the public.
    assert client.get("/api/v1/catalog/entries").json()["total"] == 0
    r = client.put(f"/api/v1/catalog/entries/{draft['id']}", json=entry_body(reason="x", name="改名"), headers=mz)
    assert r.status_code == 404


def test_classification_is_seeded_and_editable_by_platform_admin(client):
    classes = {c["code"]: c for c in client.get("/api/v1/catalog/classes").json()}
    assert [classes[c]["name"] for c in ("101", "102", "103", "104", "105")] == [
        "人口",
        "法人",
        "自然资源和空间地理",
        "社会信用",
        "电子证照",
    ]
    assert classes["2"]["name"] == "主题信息资源" and classes["3"]["level"] == 1
    r = client.post(
        "/api/v1/catalog/classes", json={"code": "101001", "name": "户籍人口"}, headers=auth(client, "ga_admin")
    )
    assert r.status_code == 403
    r = client.post(
        "/api/v1/catalog/classes", json={"code": "101001", "name": "户籍人口"}, headers=auth(client, "admin")
    )
    assert r.status_code == 201 and r.json()["level"] == 3
    r = client.post("/api/v1/catalog/classes", json={"code": "109001", "name": "x"}, headers=auth(client, "admin"))
    assert r.json()["error"]["code"] == "catalog.class_parent_missing"
    r = client.post("/api/v1/catalog/classes", json={"code": "10", "name": "x"}, headers=auth(client, "admin"))
    assert r.json()["error"]["code"] == "catalog.class_code_invalid"
    cid = r = client.patch(
        f"/api/v1/catalog/classes/{classes['101']['id']}", json={"name": "人口信息"}, headers=auth(client, "admin")
    )
    assert cid.json()["name"] == "人口信息"
    e = create_entry(client, class_code="101001")
    assert e["code"].startswith("101001-GA-") and e["class_name"] == "户籍人口"


def test_no_share_basis_is_for_the_operator_and_the_provider(client):
    e = create_entry(
        client, publish=True, share_type="none", share_method=None, no_share_basis="《中华人民共和国国家安全法》"
    )
    path = f"/api/v1/catalog/entries/{e['id']}"
    assert client.get(path, headers=auth(client, "admin")).json()["no_share_basis"] == "《中华人民共和国国家安全法》"
    assert (
        client.get(path, headers=auth(client, "ga_officer")).json()["no_share_basis"] == "《中华人民共和国国家安全法》"
    )
    other = client.get(path, headers=auth(client, "mz_officer")).json()
    assert other["share_type"] == "none" and other["no_share_basis"] is None


def test_history_hides_no_share_basis_from_other_departments(client):
    e = create_entry(client, publish=True)
    body = entry_body(share_type="none", share_method=None, no_share_basis="涉及国家秘密", reason="调整共享属性")
    r = client.put(f"/api/v1/catalog/entries/{e['id']}", json=body, headers=auth(client, "ga_officer"))
    assert r.status_code == 200, r.text
    path = f"/api/v1/catalog/entries/{e['id']}/versions"
    mine = client.get(path, headers=auth(client, "ga_officer")).json()[0]["changes"]
    theirs = client.get(path, headers=auth(client, "mz_officer")).json()[0]["changes"]
    assert "no_share_basis" in {c["field"] for c in mine}
    assert "no_share_basis" not in {c["field"] for c in theirs}
    assert "share_type" in {c["field"] for c in theirs}
