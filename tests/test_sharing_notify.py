"""Inbox (站内消息) and department webhooks: who hears of what, owner-only reading,
dedupe, and signed deliveries to a real local HTTP receiver with retry and give-up."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import auth
from sharing_helpers import WithReview, call, published, submitted, who
from sqlalchemy import select

from datatong.db import session_scope
from datatong.sharing import jobs, notify, service
from datatong.sharing.models import DepartmentWebhook, Grant, InboxMessage, WebhookDelivery

INBOX = "/api/v1/inbox"
HOOKS = "/api/v1/sharing/webhooks"


def inbox(client: Any, username: str, **params: Any) -> dict[str, Any]:
    r = client.get(INBOX, params=params, headers=auth(client, username))
    assert r.status_code == 200, r.text
    return dict(r.json())


def kinds(client: Any, username: str) -> list[str]:
    return [m["kind"] for m in inbox(client, username)["items"]]


# ---------------------------------------------------------------- a real receiver


class Receiver:
    """A tiny HTTP server on 127.0.0.1 that records what it is sent and answers ``status``."""

    def __init__(self) -> None:
        self.status = 200
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


def set_hook(client: Any, url: str, code: str = "GA", user: str = "ga_admin", **extra: Any) -> dict[str, Any]:
    r = client.put(f"{HOOKS}/{code}", json={"url": url, **extra}, headers=auth(client, user))
    assert r.status_code == 200, r.text
    return dict(r.json())


# ---------------------------------------------------------------- inbox: who hears what


def test_submission_reaches_the_provider_and_the_decision_the_consumer(client, settings):
    entry = published(client)
    app_id = submitted(settings, entry["id"])
    for name in ("ga_admin", "ga_officer"):
        [message] = inbox(client, name)["items"]
        assert message["kind"] == "application_new" and message["kind_label"] == "新的共享申请"
        assert message["link"] == f"/sharing/applications/{app_id}" and message["application_id"] == app_id
        assert "户籍人口基本信息" in message["title"] and f"#{app_id}" in message["title"]
        assert "答复期限" in message["body"] and "示范市民政局" in message["body"]
    for name in ("mz_officer", "mz_admin", "admin", "auditor"):
        assert kinds(client, name) == []

    call(settings, service.decide, who(settings, "ga_admin"), app_id, decision="reject", reason="用途与本数据无关")
    for name in ("mz_officer", "mz_admin"):
        [message] = inbox(client, name)["items"]
        assert message["kind"] == "decision" and "不同意" in message["title"]
        assert "用途与本数据无关" in message["body"]
    assert kinds(client, "ga_admin") == ["application_new"]

    mz = who(settings, "mz_officer")
    call(settings, service.negotiate, mz, app_id, "请再考虑")
    assert kinds(client, "ga_admin") == ["coordination", "application_new"]
    call(settings, service.escalate, mz, app_id, "协商未果")
    [message] = inbox(client, "admin")["items"]
    assert message["kind"] == "coordination" and "协商未果" in message["body"]


def test_compliance_review_goes_to_the_platform_admin_first(client, settings):
    entry = published(client)
    app_id = submitted(settings, entry["id"])  # a plain one, so GA's inbox is not empty
    assert kinds(client, "admin") == []
    app = call(settings, service.create_application, who(settings, "mz_officer"), **_fields(entry["id"]))
    call(settings, service.submit, WithReview(settings), who(settings, "mz_officer"), app.id, accept_commitment=True)
    assert kinds(client, "admin") == ["application_new"]
    assert len(kinds(client, "ga_admin")) == 1  # not yet
    call(settings, service.review, settings, who(settings, "admin"), app.id, decision="pass")
    assert [m["application_id"] for m in inbox(client, "ga_admin")["items"]] == [app.id, app_id]


def _fields(entry_id: int) -> dict[str, Any]:
    from sharing_helpers import application_fields

    return application_fields(entry_id)


def test_grant_revocation_and_suspension_reach_the_consumer(client, settings):
    entry = published(client)
    app_id = submitted(settings, entry["id"])
    ga = who(settings, "ga_admin")
    grant_id = call(settings, service.decide, ga, app_id, decision="approve").grant_id
    [approved] = inbox(client, "mz_officer")["items"]
    assert approved["kind"] == "decision" and approved["grant_id"] == grant_id

    call(settings, service.change_grant, ga, grant_id, "suspend", "核查使用情况")
    call(settings, service.change_grant, ga, grant_id, "revoke", "违规转供第三方")
    revoked, suspended, _ = inbox(client, "mz_admin")["items"]
    assert suspended["kind"] == "grant_changed" and "暂停" in suspended["title"]
    assert revoked["kind"] == "revoked" and "违规转供第三方" in revoked["body"]
    assert revoked["link"] == f"/sharing/grants/{grant_id}"


def test_unconditional_grant_is_announced_to_the_provider(client, settings):
    entry = published(client, "unconditional")
    call(settings, service.request_unconditional_grant, who(settings, "mz_officer"), entry["id"],
         purpose_kind="work_reference")  # fmt: skip
    [message] = inbox(client, "ga_officer")["items"]
    assert message["kind"] == "grant_changed" and "无条件共享" in message["title"]


# ---------------------------------------------------------------- inbox: reading


def test_only_the_owner_reads_and_marks_a_message(client, settings):
    entry = published(client)
    submitted(settings, entry["id"])
    submitted(settings, entry["id"])
    box = inbox(client, "ga_admin")
    assert box["unread"] == 2 and box["total"] == 2
    newest = box["items"][0]["id"]
    for other in ("ga_officer", "mz_officer", "admin", "auditor"):
        r = client.post(f"{INBOX}/{newest}/read", headers=auth(client, other))
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = client.post(f"{INBOX}/{newest}/read", headers=auth(client, "ga_admin"))
    assert r.status_code == 200 and r.json()["read_at"]
    assert inbox(client, "ga_admin")["unread"] == 1
    unread = inbox(client, "ga_admin", unread_only=True)
    assert [m["id"] for m in unread["items"]] != [newest] and unread["total"] == 1
    assert inbox(client, "ga_officer")["unread"] == 2  # their own copies are untouched

    r = client.post(f"{INBOX}/read-all", headers=auth(client, "ga_officer"))
    assert r.json() == {"updated": 2}
    assert inbox(client, "ga_officer")["unread"] == 0 and inbox(client, "ga_admin")["unread"] == 1
    assert client.post(f"{INBOX}/999999/read", headers=auth(client, "ga_admin")).status_code == 404


def test_inbox_is_for_signed_in_people(client):
    assert client.get(INBOX).status_code == 401
    r = client.get(INBOX, headers=auth(client, "client"))
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert client.get(INBOX, params={"limit": 0}, headers=auth(client, "ga_admin")).status_code == 422


def test_a_dedupe_key_writes_once(client, settings):
    users = [who(settings, n).id for n in ("ga_admin", "mz_officer")]
    first = call(settings, notify.notify_users, users, "reminder", "提醒", dedupe_key="k:1")
    again = call(settings, notify.notify_users, users, "reminder", "提醒", dedupe_key="k:1")
    plain = call(settings, notify.notify_users, users, "reminder", "无键")
    plain_again = call(settings, notify.notify_users, users, "reminder", "无键")
    assert (first, again, plain, plain_again) == (2, 0, 2, 2)
    long_key = "x" * 400  # hashed to fit the column, still unique per recipient
    assert call(settings, notify.notify_users, users, "reminder", "长键", dedupe_key=long_key) == 2
    assert call(settings, notify.notify_users, users, "reminder", "长键", dedupe_key=long_key) == 0
    with pytest.raises(ValueError):
        call(settings, notify.notify_users, users, "nonsense", "x")


# ---------------------------------------------------------------- webhooks


def test_webhook_url_must_be_http(client):
    for bad in ("ftp://example.org/x", "javascript:alert(1)", "http://", "https://user:pw@example.org/", "hook"):
        r = client.put(f"{HOOKS}/GA", json={"url": bad}, headers=auth(client, "ga_admin"))
        assert r.status_code == 422, bad
        error = r.json()["error"]
        assert error["code"] == "sharing.webhook_url_invalid" and error["field"] == "url"
        assert error["message"] and error["message_en"]
    r = client.put(f"{HOOKS}/MZ", json={"url": "https://example.org/"}, headers=auth(client, "ga_admin"))
    assert r.status_code == 403
    assert client.get(f"{HOOKS}/GA", headers=auth(client, "ga_admin")).status_code == 404
    assert client.get(f"{HOOKS}/NOPE", headers=auth(client, "admin")).status_code == 404


def test_secret_shown_once_and_sealed(client, settings, receiver):
    created = set_hook(client, receiver.url)
    secret = created["secret"]
    assert secret and len(secret) >= 40
    changed = set_hook(client, receiver.url + "?v=2")
    assert changed["secret"] is None and changed["url"].endswith("?v=2")
    shown = client.get(f"{HOOKS}/GA", headers=auth(client, "admin")).json()
    assert shown["secret"] is None
    with session_scope(settings.database_url) as s:
        hook = s.scalars(select(DepartmentWebhook)).one()
        assert secret not in hook.secret_sealed and hook.secret_sealed.startswith("v1.")
    rotated = set_hook(client, receiver.url, rotate_secret=True)["secret"]
    assert rotated and rotated != secret


def test_events_are_delivered_signed(client, settings, receiver):
    secret = set_hook(client, receiver.url)["secret"]
    entry = published(client)
    app_id = submitted(settings, entry["id"])
    assert jobs.deliver_due(settings.database_url, settings) == 1
    [(headers, body)] = receiver.requests
    assert headers["x-datatong-event"] == "application_new"
    assert jobs.verify_signature(secret, headers["x-datatong-timestamp"], body, headers["x-datatong-signature"])
    assert not jobs.verify_signature("wrong", headers["x-datatong-timestamp"], body, headers["x-datatong-signature"])
    assert not jobs.verify_signature(
        secret, headers["x-datatong-timestamp"], body + b" ", headers["x-datatong-signature"]
    )
    payload = json.loads(body)
    assert payload["event"] == "application_new" and payload["department"] == "GA"
    assert payload["application_id"] == app_id and payload["link"] == f"/sharing/applications/{app_id}"
    with session_scope(settings.database_url) as s:
        delivery = s.get(WebhookDelivery, int(headers["x-datatong-delivery"]))
        assert delivery is not None and delivery.status == "delivered" and delivery.attempts == 1
    assert jobs.deliver_due(settings.database_url, settings) == 0  # nothing sent twice
    # The consumer's department has no webhook: its decision goes to the inbox only.
    call(settings, service.decide, who(settings, "ga_admin"), app_id, decision="approve")
    assert jobs.deliver_due(settings.database_url, settings) == 0 and len(receiver.requests) == 1


def test_ping_is_sent_at_once(client, settings, receiver):
    secret = set_hook(client, receiver.url, code="MZ", user="mz_admin")["secret"]
    r = client.post(f"{HOOKS}/MZ/test", headers=auth(client, "mz_admin"))
    assert r.status_code == 202, r.text
    [(headers, body)] = receiver.requests  # the background task ran after the response
    assert headers["x-datatong-event"] == "ping" and headers["x-datatong-delivery"] == str(r.json()["delivery"]["id"])
    assert jobs.verify_signature(secret, headers["x-datatong-timestamp"], body, headers["x-datatong-signature"])
    shown = client.get(f"{HOOKS}/MZ", headers=auth(client, "mz_admin")).json()
    assert shown["recent_deliveries"][0]["status"] == "delivered"


def test_failing_receiver_backs_off_then_gives_up(client, settings, receiver):
    receiver.status = 500
    set_hook(client, receiver.url)
    entry = published(client)
    submitted(settings, entry["id"])
    t = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=5)  # the delivery is due
    waits = []
    for attempt in range(1, jobs.MAX_ATTEMPTS + 1):
        assert jobs.deliver_due(settings.database_url, settings, t) == 0
        assert len(receiver.requests) == attempt
        with session_scope(settings.database_url) as s:
            d = s.scalars(select(WebhookDelivery)).one()
            assert d.attempts == attempt and d.last_error == "HTTP 500"
            if attempt < jobs.MAX_ATTEMPTS:
                assert d.status == "pending"
                wait = _utc(d.next_attempt_at) - t
                waits.append(wait)
            else:
                assert d.status == "dead"
        if attempt < jobs.MAX_ATTEMPTS:
            jobs.deliver_due(settings.database_url, settings, t + wait - timedelta(seconds=1))
            assert len(receiver.requests) == attempt  # not before its time
            t += wait
    assert [w.total_seconds() / 60 for w in waits] == [1, 2, 4, 8, 16, 32, 60]
    jobs.deliver_due(settings.database_url, settings, t + timedelta(days=1))
    assert len(receiver.requests) == jobs.MAX_ATTEMPTS  # a dead delivery stays dead


def _utc(d: datetime) -> datetime:
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d


def test_unreachable_receiver_records_why(client, settings, receiver):
    url = receiver.url
    receiver.server.shutdown()
    receiver.server.server_close()
    secret = set_hook(client, url)["secret"]
    call(settings, notify.notify_department, who(settings, "ga_admin").department_id, "reminder", "测试")
    jobs.deliver_due(settings.database_url, settings)
    with session_scope(settings.database_url) as s:
        d = s.scalars(select(WebhookDelivery)).one()
        assert d.status == "pending" and d.attempts == 1 and d.last_error
        assert secret not in d.last_error


def test_deleted_webhook_stops_deliveries(client, settings, receiver):
    set_hook(client, receiver.url)
    call(settings, notify.notify_department, who(settings, "ga_admin").department_id, "reminder", "测试")
    r = client.delete(f"{HOOKS}/GA", headers=auth(client, "ga_admin"))
    assert r.status_code == 204
    assert jobs.deliver_due(settings.database_url, settings) == 0 and receiver.requests == []
    with session_scope(settings.database_url) as s:
        assert s.scalars(select(WebhookDelivery.status)).all() == ["dead"]
        assert s.scalars(select(InboxMessage)).all()  # the inbox copies stay
        assert s.scalars(select(Grant)).all() == []
