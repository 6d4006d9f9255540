"""Reading the audit trail: search filters, keyset pages, who sees which records, the
CSV and Excel exports, the pages — and that reading the trail is itself recorded.

The records under test are appended directly (``append``) with times in 2020, so the
records the platform writes meanwhile (logins, the searches themselves) stay apart:
the filters carry ``until=2020-12-31`` or the assertions look at the seeded ones only.
"""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

import openpyxl
import pytest
import sqlalchemy as sa
from conftest import auth
from fastapi.testclient import TestClient
from test_pages import login

from datatong.audit import export, query
from datatong.audit.models import AuditRecord
from datatong.audit.service import Event, append
from datatong.db import engine_for, session_scope
from datatong.orgs.service import Principal

OLD = {"until": "2020-12-31"}  # the seeded records only
SEEDED = [
    # name: (time UTC, actor kind, actor, actor dept, action, resource, subject dept, extra)
    (
        "ga_create",
        "2020-11-20T01:00:00.000000Z",
        "user",
        "ga_officer",
        "GA",
        "catalog.entry.create",
        "GA-001",
        "GA",
        {},
    ),
    (
        "ga_update",
        "2020-11-20T02:00:00.000000Z",
        "user",
        "ga_officer",
        "GA",
        "catalog.entry.update",
        "GA-001",
        "GA",
        {"detail": json.dumps({"fields": ["summary"], "reason": "补充说明"}, ensure_ascii=False)},
    ),
    (
        "mz_create",
        "2020-11-21T03:00:00.000000Z",
        "user",
        "mz_officer",
        "MZ",
        "catalog.entry.create",
        "MZ-001",
        "MZ",
        {},
    ),
    (
        "mz_reads_ga",
        "2020-11-21T04:00:00.000000Z",
        "user",
        "mz_officer",
        "MZ",
        "catalog.entry.read",
        "GA-001",
        "GA",
        {},
    ),
    ("user_create", "2020-11-22T05:00:00.000000Z", "user", "admin", "DSJ", "user.create", "user:newbie", "MZ", {}),
    (
        "login_failed",
        "2020-11-22T06:00:00.000000Z",
        "anonymous",
        "ga_officer",
        None,
        "auth.login_failed",
        "user:ga_officer",
        "GA",
        {"outcome": "refused", "reason": "auth.bad_credentials"},
    ),
    (
        "dept_update",
        "2020-11-22T16:30:00.000000Z",  # Beijing time: 2020-11-23 00:30
        "user",
        "admin",
        "DSJ",
        "department.update",
        "department:SJ",
        "SJ",
        {
            "request_id": "req-7",
            "client_addr": "10.0.0.7",
            "purpose": "=cmd|' /C calc'!A0",
            "items": "身份证号,姓名",
            "rows": 12,
            "grant_id": 5,
            "detail": '{"contact": "12345"}',
        },
    ),
]
NAMES = [s[0] for s in SEEDED]


def _event(spec: tuple[Any, ...]) -> Event:
    _, at, kind, actor, actor_dept, action, resource, subject, extra = spec
    return Event(
        actor_kind=kind,
        actor=actor,
        action=action,
        actor_department=actor_dept,
        resource=resource,
        subject_department=subject,
        occurred_at=at,
        **extra,
    )


@pytest.fixture
def trail(world: dict[str, Any], settings: Any) -> dict[str, int]:
    """The seeded records by name -> seq (appended after whatever the world wrote)."""
    with engine_for(settings.database_url).begin() as conn:
        last = append(conn, [_event(s) for s in SEEDED])
    first = last - len(SEEDED) + 1
    return {name: first + i for i, name in enumerate(NAMES)}


def seqs(r: Any) -> list[int]:
    assert r.status_code == 200, r.text
    return [item["seq"] for item in r.json()["items"]]


def get(client: TestClient, who: str, **params: Any) -> Any:
    return client.get("/api/v1/audit/records", params=params, headers=auth(client, who))


def named(trail: dict[str, int], *names: str) -> list[int]:
    """Seqs of the named records, newest first (as the API lists them)."""
    return sorted((trail[n] for n in names), reverse=True)


def _db_records(settings: Any, **where: Any) -> list[AuditRecord]:
    with session_scope(settings.database_url) as s:
        stmt = sa.select(AuditRecord).filter_by(**where).order_by(AuditRecord.seq)
        return list(s.scalars(stmt))


# ---------------------------------------------------------------- search and scope


def test_auditor_and_platform_admin_see_every_record_newest_first(client, trail):
    for who in ("auditor", "admin"):
        assert seqs(get(client, who, **OLD)) == named(trail, *NAMES)
    item = get(client, "auditor", request_id="req-7").json()["items"][0]
    assert item["seq"] == trail["dept_update"]
    assert item["occurred_at"] == "2020-11-22T16:30:00.000000Z"
    assert item["occurred_at_local"] == "2020-11-23 00:30:00"
    assert (item["action"], item["action_label"]) == ("department.update", "修改部门")
    assert (item["outcome"], item["outcome_label"]) == ("allowed", "允许")
    assert (item["rows"], item["grant_id"], item["items"]) == (12, 5, "身份证号,姓名")
    assert item["client_addr"] == "10.0.0.7" and item["detail"] == '{"contact": "12345"}'
    assert len(item["hash"]) == 64 and len(item["prev_hash"]) == 64 and item["alg"] == "sha256"


def test_department_admin_sees_only_records_about_their_department(client, trail):
    def in_scope(item: dict[str, Any], code: str) -> bool:
        return code in (item["actor_department"], item["subject_department"])

    r = get(client, "ga_admin", limit=500)
    assert [s for s in seqs(r) if s in trail.values()] == named(
        trail, "ga_create", "ga_update", "mz_reads_ga", "login_failed"
    )
    assert all(in_scope(i, "GA") for i in r.json()["items"])

    r = get(client, "mz_admin", limit=500)
    assert [s for s in seqs(r) if s in trail.values()] == named(trail, "mz_create", "mz_reads_ga", "user_create")
    assert all(in_scope(i, "MZ") for i in r.json()["items"])

    # A department filter narrows the own scope, never widens it: GA's records about MZ.
    assert seqs(get(client, "ga_admin", department="MZ", **OLD)) == named(trail, "mz_reads_ga")
    assert seqs(get(client, "ga_admin", department="SJ", **OLD)) == []


def test_one_record_within_scope_others_answer_404(client, trail):
    h = auth(client, "ga_admin")
    r = client.get(f"/api/v1/audit/records/{trail['ga_update']}", headers=h)
    assert r.status_code == 200 and r.json()["action_label"] == "修改目录"
    assert json.loads(r.json()["detail"]) == {"fields": ["summary"], "reason": "补充说明"}
    for seq in (trail["mz_create"], trail["dept_update"], 999_999, 2**63, 10**30, 0, -1):
        r = client.get(f"/api/v1/audit/records/{seq}", headers=h)
        assert r.status_code == 404, (seq, r.text)
        assert r.json()["error"]["code"] == "not_found"
    assert client.get(f"/api/v1/audit/records/{trail['mz_create']}", headers=auth(client, "auditor")).status_code == 200


@pytest.mark.parametrize("who", ["ga_officer", "mz_officer", "client"])
@pytest.mark.parametrize("path", ["/api/v1/audit/records", "/api/v1/audit/records/1", "/api/v1/audit/export"])
def test_officers_and_systems_are_refused(client, trail, who, path):
    r = client.get(path, headers=auth(client, who))
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = client.get(path)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"


def test_filters(client, trail):
    def found(**params: Any) -> list[int]:
        return seqs(get(client, "auditor", **{**OLD, **params}))

    assert found(department="GA") == named(trail, "ga_create", "ga_update", "mz_reads_ga", "login_failed")
    assert found(department="DSJ") == named(trail, "user_create", "dept_update")
    assert found(actor="mz_officer") == named(trail, "mz_create", "mz_reads_ga")
    assert found(actor="mz_off*") == named(trail, "mz_create", "mz_reads_ga")
    assert found(actor="mz_off") == []
    assert found(resource="GA-001") == named(trail, "ga_create", "ga_update", "mz_reads_ga")
    assert found(resource="user:*") == named(trail, "user_create", "login_failed")
    assert found(resource="user:%") == []  # LIKE wildcards are plain text
    assert found(action="catalog.entry.create") == named(trail, "ga_create", "mz_create")
    catalog = named(trail, "ga_create", "ga_update", "mz_create", "mz_reads_ga")
    assert found(action="catalog.") == catalog
    assert found(action="catalog*") == catalog
    assert found(action="catalog") == []
    assert found(outcome="refused") == named(trail, "login_failed")
    assert found(outcome="拒绝") == named(trail, "login_failed")
    assert found(request_id="req-7") == named(trail, "dept_update")
    assert found(department="GA", action="catalog.", actor="mz_officer") == named(trail, "mz_reads_ga")


def test_time_filters_read_dates_and_naive_times_as_beijing_time(client, trail):
    def found(**params: Any) -> list[int]:
        return seqs(get(client, "auditor", **params))

    # 2020-11-22 in Beijing is 2020-11-21T16:00Z .. 2020-11-22T16:00Z.
    day = named(trail, "user_create", "login_failed")
    assert found(since="2020-11-22", until="2020-11-22") == day
    assert found(since="2020-11-23", until="2020-11-23") == named(trail, "dept_update")
    assert found(since="2020-11-22T05:00:00Z", **OLD) == named(trail, "user_create", "login_failed", "dept_update")
    assert found(since="2020-11-22T13:00:00", until="2020-11-22T14:00:00") == day  # Beijing, until inclusive
    assert found(since="2020-11-22T05:00:00+00:00", until="2020-11-22T05:00:00+00:00") == named(trail, "user_create")
    assert found(until="2020-11-20T09:00:00+08:00") == named(trail, "ga_create")
    assert found(since="0001-01-01", until="9999-12-31")[-len(NAMES) :] == named(trail, *NAMES)


def test_keyset_pages(client, trail):
    pages, cursor = [], None
    while True:
        params = {**OLD, "limit": 3, **({"cursor": cursor} if cursor else {})}
        body = get(client, "auditor", **params).json()
        pages.append([i["seq"] for i in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    everything = named(trail, *NAMES)
    assert pages == [everything[0:3], everything[3:6], everything[6:7]]
    body = get(client, "auditor", limit=7, **OLD).json()
    assert body["next_cursor"] is None and len(body["items"]) == 7


def test_reading_the_trail_is_recorded(client, settings, trail):
    get(client, "ga_admin", action="catalog.", since="2020-11-20", until="2020-11-21")
    last = _db_records(settings, action="audit.search")[-1]
    assert (last.actor, last.actor_department, last.rows) == ("ga_admin", "GA", 3)
    assert json.loads(last.detail or "") == {
        "filters": {"action": "catalog.", "since": "2020-11-20", "until": "2020-11-21"}
    }
    # An auditor's search of GA's records is about GA: GA's admin sees who looked.
    get(client, "auditor", department="GA", **OLD)
    last = _db_records(settings, action="audit.search")[-1]
    assert (last.actor, last.subject_department) == ("auditor", "GA")
    assert last.seq in seqs(get(client, "ga_admin", action="audit.search", actor="auditor"))

    client.get(f"/api/v1/audit/records/{trail['ga_create']}", headers=auth(client, "auditor"))
    read = _db_records(settings, action="audit.read")[-1]
    assert (read.actor, read.resource, read.subject_department) == ("auditor", f"audit:{trail['ga_create']}", "GA")


@pytest.mark.parametrize(
    ("params", "code", "field"),
    [
        ({"since": "yesterday"}, "audit.since_invalid", "since"),
        ({"until": "2020-13-01"}, "audit.until_invalid", "until"),
        ({"since": "2020-11-23", "until": "2020-11-22"}, "audit.range_invalid", "until"),
        ({"outcome": "maybe"}, "audit.outcome_invalid", "outcome"),
        ({"cursor": "abc"}, "audit.cursor_invalid", "cursor"),
        ({"cursor": "99999999999999999999"}, "audit.cursor_invalid", "cursor"),
        ({"actor": "x" * 200}, "audit.filter_too_long", "actor"),
        ({"resource": "a\x01b"}, "audit.filter_invalid", "resource"),
        ({"limit": 0}, "validation_error", "limit"),
        ({"limit": 501}, "validation_error", "limit"),
        ({"limit": "many"}, "validation_error", "limit"),
    ],
)
def test_bad_input_answers_422_with_a_code(client, trail, params, code, field):
    r = get(client, "auditor", **params)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert (error["code"], error["field"]) == (code, field)
    assert error["message"] and error["message_en"]


def test_refused_before_validated(client, trail):
    r = client.get("/api/v1/audit/records", params={"since": "bad"}, headers=auth(client, "ga_officer"))
    assert r.status_code == 403


# ---------------------------------------------------------------- export


def _export(client: TestClient, who: str, fmt: str, **params: Any) -> Any:
    return client.get("/api/v1/audit/export", params={"format": fmt, **params}, headers=auth(client, who))


def _csv_rows(r: Any) -> list[list[str]]:
    assert r.status_code == 200, r.text
    assert r.content.startswith(b"\xef\xbb\xbf"), "UTF-8 BOM, so Excel reads the Chinese"
    return list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"), newline="")))


def test_csv_export(client, settings, trail):
    r = _export(client, "auditor", "csv", **OLD)
    assert r.headers["content-type"].startswith("text/csv")
    disposition = r.headers["content-disposition"]
    assert re.search(r'filename="audit-\d{8}\.csv"', disposition)
    assert "filename*=UTF-8''%E5%AE%A1%E8%AE%A1%E6%97%A5%E5%BF%97-" in disposition  # 审计日志-
    header, *rows = _csv_rows(r)
    assert header == export.HEADERS
    assert [int(row[0]) for row in rows] == named(trail, *NAMES)
    row = dict(zip(header, rows[0], strict=True))
    stored = _db_records(settings, seq=trail["dept_update"])[0]
    assert row["发生时间（UTC）"] == "2020-11-22T16:30:00.000000Z"
    assert row["发生时间（北京时间）"] == "2020-11-23 00:30:00"
    assert (row["操作者"], row["操作者部门代码"], row["操作者部门"]) == ("admin", "DSJ", "示范市大数据局")
    assert (row["操作代码"], row["操作"], row["结果"]) == ("department.update", "修改部门", "允许")
    assert (row["数据所属部门代码"], row["数据所属部门"]) == ("SJ", "示范市审计局")
    assert row["用途"] == "'=cmd|' /C calc'!A0"  # formula-like text is quoted (CSV injection)
    assert (row["信息项"], row["行数"], row["授权编号"]) == ("身份证号,姓名", "12", "5")
    assert (row["请求编号"], row["客户端地址"], row["详情"]) == ("req-7", "10.0.0.7", '{"contact": "12345"}')
    assert (row["哈希"], row["前一哈希"], row["哈希算法"]) == (stored.hash, stored.prev_hash, "sha256")
    refused = dict(zip(header, rows[1], strict=True))
    assert (refused["操作"], refused["结果"], refused["原因"], refused["操作者类型"]) == (
        "登录失败",
        "拒绝",
        "auth.bad_credentials",
        "匿名",
    )
    assert refused["操作者部门"] == "" and refused["授权编号"] == ""

    # The export is on the record, with the number of rows it held.
    done = _db_records(settings, action="audit.export")[-1]
    assert (done.actor, done.rows) == ("auditor", len(NAMES))
    assert json.loads(done.detail or "")["filters"] == OLD
    assert json.loads(done.detail or "")["format"] == "csv"


def test_excel_export(client, trail):
    r = _export(client, "auditor", "xlsx", action="catalog.", **OLD)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == export.XLSX_MIME
    assert re.search(r'filename="audit-\d{8}\.xlsx"', r.headers["content-disposition"])
    wb = openpyxl.load_workbook(io.BytesIO(r.content))
    ws = wb["审计日志"]
    rows = list(ws.iter_rows(values_only=True))
    assert list(rows[0]) == export.HEADERS
    assert [row[0] for row in rows[1:]] == named(trail, "ga_create", "ga_update", "mz_create", "mz_reads_ga")
    by_name = dict(zip(export.HEADERS, rows[-1], strict=True))
    assert by_name["操作"] == "新建目录" and by_name["操作者部门"] == "示范市公安局"

    r = _export(client, "auditor", "xlsx", request_id="req-7")
    ws = openpyxl.load_workbook(io.BytesIO(r.content))["审计日志"]
    purpose = ws.cell(row=2, column=export.HEADERS.index("用途") + 1)
    assert purpose.value == "=cmd|' /C calc'!A0" and purpose.data_type == "s"  # text, not a formula
    assert ws.cell(row=2, column=export.HEADERS.index("行数") + 1).value == 12


def test_export_keeps_to_scope_and_filters(client, trail):
    header, *rows = _csv_rows(_export(client, "ga_admin", "csv", **OLD))
    assert [int(r[0]) for r in rows] == named(trail, "ga_create", "ga_update", "mz_reads_ga", "login_failed")
    header, *rows = _csv_rows(_export(client, "mz_admin", "csv", outcome="allowed", **OLD))
    assert [int(r[0]) for r in rows] == named(trail, "mz_create", "mz_reads_ga", "user_create")
    header, *rows = _csv_rows(_export(client, "auditor", "csv", since="2030-01-01"))
    assert rows == []


def test_export_bad_input(client, trail, monkeypatch):
    r = _export(client, "auditor", "pdf")
    assert r.status_code == 422 and r.json()["error"]["code"] == "audit.export_format_invalid"
    r = _export(client, "auditor", "csv", since="soon")
    assert r.status_code == 422 and r.json()["error"]["code"] == "audit.since_invalid"
    monkeypatch.setattr(query, "EXPORT_CAP", 3)
    r = _export(client, "auditor", "csv", **OLD)
    assert r.status_code == 422 and r.json()["error"]["code"] == "audit.export_too_large"
    assert "3" in r.json()["error"]["message"]


def test_large_export_reads_in_chunks(client, settings, trail, monkeypatch):
    """More records than one chunk: every one arrives once, in order."""
    n = 2_345
    events = [
        Event(
            actor_kind="system",
            actor="system",
            action="test.bulk",
            resource=f"R{i}",
            occurred_at=f"2020-10-01T00:00:00.{i:06d}Z",
        )
        for i in range(n)
    ]
    with engine_for(settings.database_url).begin() as conn:
        last = append(conn, events)
    monkeypatch.setattr(query, "EXPORT_CHUNK", 500)
    monkeypatch.setattr(export, "CSV_BATCH", 100)
    with client.stream(
        "GET", "/api/v1/audit/export", params={"format": "csv", "action": "test.bulk"}, headers=auth(client, "auditor")
    ) as r:
        assert r.status_code == 200
        parts = list(r.iter_bytes())
    body = b"".join(parts)
    header, *rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"), newline="")))
    assert [int(row[0]) for row in rows] == list(range(last, last - n, -1))
    plan = query.ExportPlan(
        Principal("user", 0, "auditor", "", "auditor", 0, "SJ"), query.Filters(action="test.bulk"), last, n
    )
    assert sum(1 for _ in query.iter_export(settings.database_url, plan, chunk=n)) == n  # exactly one full chunk


# ---------------------------------------------------------------- pages


def test_audit_page_for_auditor(client, trail):
    login(client, "auditor")
    r = client.get("/audit", params=OLD)
    assert r.status_code == 200
    html = r.text
    assert '<a href="/audit" aria-current="page">审计日志</a>' in html
    for name in NAMES:
        assert f'id="rec-{trail[name]}"' in html
    assert "修改部门" in html and "2020-11-23 00:30:00" in html and "拒绝" in html
    assert "/api/v1/audit/export?until=2020-12-31&amp;format=csv" in html
    assert "/api/v1/audit/export?until=2020-12-31&amp;format=xlsx" in html
    assert '<option value="MZ">' in html  # the department filter offers every department
    # The expandable detail: pretty JSON and the hashes.
    assert "&#34;reason&#34;: &#34;补充说明&#34;" in html or "&quot;reason&quot;: &quot;补充说明&quot;" in html

    # htmx: the results only; "更多" brings the next rows and the next "更多".
    r = client.get("/audit", params={**OLD, "action": "catalog."}, headers={"HX-Request": "true"})
    assert "<html" not in r.text and 'id="audit-rows"' in r.text
    r = client.get("/audit", params={**OLD, "limit": "2"}, headers={"HX-Request": "true"})
    assert r.status_code == 200


def test_audit_page_more_rows(client, settings, trail, monkeypatch):
    from datatong.audit import pages

    monkeypatch.setattr(pages, "PAGE_SIZE", 3)
    login(client, "auditor")
    html = client.get("/audit", params=OLD).text
    everything = named(trail, *NAMES)
    more = re.search(r'hx-get="([^"]+)"[^>]*rel="next"', html)
    assert more, "a 更多 button"
    url = more.group(1).replace("&amp;", "&")
    assert f"cursor={everything[2]}" in url
    r = client.get(url, headers={"HX-Request": "true"})
    assert r.text.lstrip().startswith("<tr") and "<table" not in r.text
    assert re.findall(r'<tr class="audit-row" id="rec-(\d+)"', r.text) == [str(s) for s in everything[3:6]]
    assert f"cursor={everything[5]}" in r.text


def test_audit_page_for_department_admin(client, trail):
    login(client, "ga_admin")
    html = client.get("/audit", params={**OLD, "department": "MZ"}).text  # the department is fixed
    shown = {int(s) for s in re.findall(r'<tr class="audit-row" id="rec-(\d+)"', html)}
    assert shown == {trail[n] for n in ("ga_create", "ga_update", "mz_reads_ga", "login_failed")}
    assert "（仅本部门）" in html and 'name="department"' not in html
    assert client.get(f"/audit/{trail['mz_create']}").status_code == 404
    r = client.get(f"/audit/{trail['ga_update']}")
    assert r.status_code == 200 and "补充说明" in r.text


def test_audit_page_refused_for_others(client, trail):
    r = client.get("/audit", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=/audit")
    login(client, "ga_officer")
    r = client.get("/audit")
    assert r.status_code == 403 and "无权访问" in r.text
    assert client.get(f"/audit/{trail['ga_create']}").status_code == 403
    assert 'href="/audit"' not in client.get("/catalog").text  # no menu item either


def test_audit_page_bad_filter_shows_the_message(client, trail):
    login(client, "auditor")
    r = client.get("/audit", params={"since": "bad"})
    assert r.status_code == 200
    assert "开始时间须为日期或时间" in r.text and 'class="audit-row"' not in r.text


def test_record_page(client, settings, trail):
    login(client, "auditor")
    r = client.get(f"/audit/{trail['dept_update']}")
    assert r.status_code == 200
    stored = _db_records(settings, seq=trail["dept_update"])[0]
    assert stored.hash in r.text and stored.prev_hash in r.text
    assert "修改部门" in r.text and "/audit?request_id=req-7" in r.text
    read = _db_records(settings, action="audit.read")[-1]
    assert (read.actor, read.resource) == ("auditor", f"audit:{trail['dept_update']}")
    assert client.get("/audit/99999999").status_code == 404
