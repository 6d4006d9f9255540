"""Departments, users, roles, tokens and application credentials."""

from __future__ import annotations

import time

import jwt
from conftest import PASSWORD, auth
from typer.testing import CliRunner


def test_departments_form_a_hierarchy_with_levels(client):
    admin = auth(client, "admin")
    r = client.post(
        "/api/v1/departments",
        json={"code": "GA-FJ", "name": "示范市公安局福江分局", "level": "区县", "parent_code": "GA"},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    assert r.json()["level"] == "district"
    r = client.post(
        "/api/v1/departments",
        json={"code": "PROV", "name": "省政府", "level": "province", "parent_code": "GA-FJ"},
        headers=admin,
    )
    assert r.json()["error"]["code"] == "department.level_above_parent"
    r = client.post("/api/v1/departments", json={"code": "GA", "name": "重复", "level": "city"}, headers=admin)
    assert r.json()["error"]["code"] == "department.code_taken"
    r = client.post("/api/v1/departments", json={"code": "X1", "name": "x", "level": "乡镇"}, headers=admin)
    assert r.json()["error"]["code"] == "department.level_invalid"
    r = client.post("/api/v1/departments", json={"code": "坏 代码", "name": "x", "level": "city"}, headers=admin)
    assert r.json()["error"]["code"] == "department.code_invalid"


def test_department_admin_manages_only_own_department(client, world):
    ga, mz = world["departments"]["GA"], world["departments"]["MZ"]
    headers = auth(client, "ga_admin")
    r = client.patch(f"/api/v1/departments/{ga}", json={"contact": "0571-1234567"}, headers=headers)
    assert r.status_code == 200 and r.json()["contact"] == "0571-1234567"
    assert client.patch(f"/api/v1/departments/{mz}", json={"contact": "x"}, headers=headers).status_code == 403
    r = client.post("/api/v1/departments", json={"code": "N1", "name": "n", "level": "city"}, headers=headers)
    assert r.status_code == 403
    users = client.get("/api/v1/users", headers=headers).json()
    assert {u["username"] for u in users} == {"ga_admin", "ga_officer"}


def test_department_admin_creates_users_only_in_own_department(client):
    headers = auth(client, "ga_admin")
    body = {"username": "ga_new", "display_name": "新数据员", "password": "Str0ng!pass", "role": "data_officer"}
    r = client.post("/api/v1/users", json=body, headers=headers)
    assert r.status_code == 201, r.text
    r = client.post("/api/v1/users", json={**body, "username": "mz_new", "department_code": "MZ"}, headers=headers)
    assert r.status_code == 403
    r = client.post("/api/v1/users", json={**body, "username": "boss", "role": "platform_admin"}, headers=headers)
    assert r.status_code == 403
    r = client.post("/api/v1/users", json={**body, "username": "ga_new"}, headers=headers)
    assert r.json()["error"]["code"] == "user.username_taken"
    r = client.post("/api/v1/users", json={**body, "username": "weak", "password": "password"}, headers=headers)
    assert r.json()["error"]["code"] in ("user.password_too_weak", "user.password_too_short")
    r = client.post("/api/v1/users", json={**body, "username": "x", "role": "king"}, headers=auth(client, "admin"))
    assert r.json()["error"]["code"] in ("user.role_invalid", "user.username_invalid")
    mz_users = [
        u for u in client.get("/api/v1/users", headers=auth(client, "admin")).json() if u["username"] == "mz_officer"
    ]
    r = client.patch(f"/api/v1/users/{mz_users[0]['id']}", json={"is_active": False}, headers=headers)
    assert r.status_code == 404


def test_disabling_or_new_password_revokes_tokens(client):
    officer = auth(client, "ga_officer")
    me = client.get("/api/v1/me", headers=officer).json()
    assert me["role"] == "data_officer" and me["department_code"] == "GA"
    uid = [
        u for u in client.get("/api/v1/users", headers=auth(client, "ga_admin")).json() if u["username"] == "ga_officer"
    ][0]["id"]
    r = client.patch(f"/api/v1/users/{uid}", json={"password": "N3w!password"}, headers=auth(client, "ga_admin"))
    assert r.status_code == 200
    r = client.get("/api/v1/me", headers=officer)
    assert r.status_code == 401 and r.json()["error"]["code"] == "auth.token_invalid"
    r = client.post("/api/v1/auth/token", json={"username": "ga_officer", "password": PASSWORD})
    assert r.json()["error"]["code"] == "auth.bad_credentials"
    client.patch(f"/api/v1/users/{uid}", json={"is_active": False}, headers=auth(client, "ga_admin"))
    r = client.post("/api/v1/auth/token", json={"username": "ga_officer", "password": "N3w!password"})
    assert r.json()["error"]["code"] == "auth.account_disabled"


def test_bad_and_expired_tokens(client, settings):
    r = client.get("/api/v1/me", headers={"Authorization": "Bearer nonsense"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "auth.token_invalid"
    expired = jwt.encode(
        {"sub": "1", "kind": "user", "ver": 0, "iss": "datatong", "exp": int(time.time()) - 5},
        settings.secret_key,
        algorithm="HS256",
    )
    r = client.get("/api/v1/me", headers={"Authorization": f"Bearer {expired}"})
    assert r.json()["error"]["code"] == "auth.token_expired"
    forged = jwt.encode(
        {"sub": "1", "kind": "user", "ver": 0, "iss": "datatong", "exp": int(time.time()) + 60},
        "wrong-key-of-a-decent-length-0123456789",
        algorithm="HS256",
    )
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    r = client.post("/api/v1/auth/token", json={"username": "nobody", "password": "x"})
    assert r.status_code == 401 and r.json()["error"]["message"] == "用户名或密码错误"


def test_client_credentials_give_short_lived_tokens(client):
    r = client.post("/api/v1/clients", json={"name": "民政婚姻登记系统"}, headers=auth(client, "mz_admin"))
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["client_secret"]
    listed = client.get("/api/v1/clients", headers=auth(client, "mz_admin")).json()
    assert "client_secret" not in listed[0]
    assert client.get("/api/v1/clients", headers=auth(client, "ga_admin")).json() == []
    r = client.post("/api/v1/auth/client-token", json={"client_id": created["client_id"], "client_secret": "bad"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "auth.bad_client_credentials"
    r = client.post(
        "/api/v1/auth/client-token", json={"client_id": created["client_id"], "client_secret": created["client_secret"]}
    )
    token = r.json()
    assert token["expires_in"] == 15 * 60
    me = client.get("/api/v1/me", headers={"Authorization": "Bearer " + token["access_token"]}).json()
    assert me["kind"] == "client" and me["department_code"] == "MZ"
    r = client.post("/api/v1/clients", json={"name": "x", "department_code": "GA"}, headers=auth(client, "mz_admin"))
    assert r.status_code == 403


def _cli(settings, monkeypatch, *args, input=None):
    from datatong.cli import app
    from datatong.settings import get_settings

    monkeypatch.setenv("DATATONG_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("DATATONG_VAR_DIR", str(settings.var_dir))
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, list(args), input=input)
    finally:
        get_settings.cache_clear()


def test_cli_user_create_and_department_import(client, settings, monkeypatch, tmp_path):
    csv_file = tmp_path / "depts.csv"
    csv_file.write_text(
        "部门代码,部门名称,层级,上级部门代码\nJY,示范市教育局,市,SHI\nJY-1,示范市第一中学,区县,JY\n",
        encoding="utf-8-sig",
    )
    r = _cli(settings, monkeypatch, "department", "import", str(csv_file))
    assert r.exit_code == 0, r.output
    bad = tmp_path / "bad.csv"
    bad.write_text("code,name,level,parent_code\nWS,卫健委,city,SHI\nWS2,x,city,NOPE\n", encoding="utf-8")
    r = _cli(settings, monkeypatch, "department", "import", str(bad))
    assert r.exit_code == 2 and "第 3 行" in r.output
    codes = {d["code"] for d in client.get("/api/v1/departments", headers=auth(client, "admin")).json()}
    assert {"JY", "JY-1"} <= codes and "WS" not in codes  # all or nothing
    r = _cli(
        settings,
        monkeypatch,
        "user",
        "create",
        "jy_officer",
        "--role",
        "data_officer",
        "--department",
        "JY",
        "--password",
        "Jy!officer1",
    )
    assert r.exit_code == 0, r.output
    r = client.post("/api/v1/auth/token", json={"username": "jy_officer", "password": "Jy!officer1"})
    assert r.status_code == 200
    r = _cli(
        settings,
        monkeypatch,
        "user",
        "create",
        "x2",
        "--role",
        "data_officer",
        "--department",
        "NOPE",
        "--password",
        "Jy!officer1",
    )
    assert r.exit_code == 2 and "NOPE" in r.output
