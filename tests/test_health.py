"""Operations: /healthz for load balancers, /metrics for Prometheus (and who may read it).

Both live outside /api/ and /.well-known/, so tests/test_authz_matrix.py does not walk
them; their access rules are tested here."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import auth, create_entry
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from datatong.app import create_app
from datatong.audit.writer import writer_for
from datatong.exchange import metrics
from datatong.keys import signing_key
from datatong.settings import Settings

CHECKS = {"database", "audit_writer", "keys", "bus"}


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def _value(text: str, name: str, **labels: str) -> float:
    return _samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


# ---------------------------------------------------------------- /healthz


def test_healthz_ok_shows_anonymous_callers_only_ok(client: TestClient, settings: Settings) -> None:
    writer_for(settings.database_url, settings.keys_path, settings.audit_checkpoint_every).start()
    r = client.get("/healthz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == CHECKS
    assert all(check == {"ok": True} for check in body["checks"].values())
    assert r.headers["cache-control"] == "no-store"


def test_healthz_details_for_the_platform_admin(client: TestClient, settings: Settings) -> None:
    writer_for(settings.database_url, settings.keys_path, settings.audit_checkpoint_every).start()
    body = client.get("/healthz", headers=auth(client, "admin")).json()
    checks = body["checks"]
    assert body["status"] == "ok" and checks["database"]["ok"] and checks["database"]["ms"] >= 0
    assert checks["keys"] == {"ok": True, "kid": signing_key(settings.keys_path).kid}
    assert checks["bus"] == {"ok": True, "kind": "outbox"}
    assert checks["audit_writer"] == {"ok": True}
    # Anyone else sees no details.
    other = client.get("/healthz", headers=auth(client, "ga_officer")).json()
    assert all(set(c) == {"ok"} for c in other["checks"].values())
    text = client.get("/healthz", headers=auth(client, "admin")).text
    assert settings.secret_key not in text and "sqlite" not in text and "postgresql" not in text


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_healthz_503_when_the_database_is_down(tmp_path: Path) -> None:
    """A real unreachable database: a PostgreSQL port where nothing listens."""
    url = f"postgresql+psycopg://postgres:hunter2@127.0.0.1:{_closed_port()}/down_{uuid.uuid4().hex[:6]}"
    down = create_app(Settings(database_url=url, var_dir=tmp_path, secret_key="s-" + uuid.uuid4().hex), migrate=False)
    r = TestClient(down).get("/healthz", headers={"Authorization": "Bearer not-checked-when-down"})
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "down"
    assert body["checks"]["database"] == {"ok": False} and body["checks"]["bus"] == {"ok": False}
    assert body["checks"]["keys"] == {"ok": True}
    assert "hunter2" not in r.text and "127.0.0.1" not in r.text


# ---------------------------------------------------------------- /metrics


def test_metrics_expose_exchange_counters_after_observe_call(client: TestClient, monkeypatch: Any) -> None:
    monkeypatch.setenv("DATATONG_METRICS_PUBLIC", "1")
    before = client.get("/metrics").text
    metrics.observe_call("verify", "allowed", 0.0031, rows=3)
    metrics.observe_call("verify", "allowed", 0.0012, rows=1)
    metrics.observe_call("verify", "refused", 0.0008, reason="grant_expired")
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    after = r.text

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta("datatong_exchange_calls_total", service="verify", outcome="allowed") == 2
    assert delta("datatong_exchange_calls_total", service="verify", outcome="refused") == 1
    assert delta("datatong_exchange_rows_total", service="verify") == 4
    assert delta("datatong_exchange_refusals_total", service="verify", reason="grant_expired") == 1
    assert delta("datatong_exchange_latency_seconds_count", service="verify") == 3
    assert delta("datatong_exchange_latency_seconds_bucket", service="verify", le="0.001") == 1
    assert delta("datatong_exchange_latency_seconds_bucket", service="verify", le="0.005") == 3
    # Our own registry: nothing of prometheus-client's default process/platform collectors.
    assert "process_cpu_seconds_total" not in after and "python_gc" not in after


def test_http_requests_are_counted_by_route_template(client: TestClient, monkeypatch: Any) -> None:
    monkeypatch.setenv("DATATONG_METRICS_PUBLIC", "1")
    entry = create_entry(client)
    before = client.get("/metrics").text
    path = f"/api/v1/catalog/entries/{entry['id']}"
    assert client.get(path, headers=auth(client, "ga_officer")).status_code == 200
    assert client.get(f"/no/such/page/{uuid.uuid4().hex}").status_code == 404
    after = client.get("/metrics").text
    route = "/api/v1/catalog/entries/{entry_id}"
    key = {"method": "GET", "route": route, "status": "200"}
    assert (
        _value(after, "datatong_http_requests_total", **key) - _value(before, "datatong_http_requests_total", **key)
        == 1
    )
    miss = {"method": "GET", "route": "<unmatched>", "status": "404"}
    assert _value(after, "datatong_http_requests_total", **miss) > _value(
        before, "datatong_http_requests_total", **miss
    )
    assert path not in after and "/no/such/page" not in after


@pytest.mark.parametrize(
    ("who", "status"), [(None, 401), ("ga_officer", 403), ("auditor", 403), ("client", 403), ("admin", 200)]
)
def test_metrics_need_the_platform_admin_from_afar(
    client: TestClient, monkeypatch: Any, who: str | None, status: int
) -> None:
    monkeypatch.delenv("DATATONG_METRICS_PUBLIC", raising=False)
    r = client.get("/metrics", headers=auth(client, who) if who else {})
    assert r.status_code == status, r.text
    if status != 200:
        assert "datatong_" not in r.text


def test_metrics_are_open_to_loopback_without_proxy_headers(app: Any, world: Any, monkeypatch: Any) -> None:
    monkeypatch.delenv("DATATONG_METRICS_PUBLIC", raising=False)
    for host in ("127.0.0.1", "::1"):
        local = TestClient(app, client=(host, 50000))
        assert local.get("/metrics").status_code == 200
    local = TestClient(app, client=("127.0.0.1", 50000))
    # Through a reverse proxy on the same host everyone would look local: refused.
    for header in ("X-Forwarded-For", "X-Real-IP", "Forwarded"):
        assert local.get("/metrics", headers={header: "203.0.113.9"}).status_code == 401
    assert TestClient(app, client=("10.0.0.8", 50000)).get("/metrics").status_code == 401
