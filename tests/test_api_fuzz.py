"""API fuzzing: Schemathesis generates requests from the app's own OpenAPI document.

For every documented operation, as an anonymous caller and as the platform admin:
no answer is a 5xx, none takes long, every error (status >= 400) is the platform's
``{"error": {"code", "message" (中文), "message_en"}}`` — or CKAN's own envelope on
``/api/3/action/*`` — and answers conform to the documented status codes, content
types and schemas. Examples are few and derandomized so CI stays fast and repeatable.

Schemathesis' pytest plugin is used with a schema built at import from an app that
never touches a database (the OpenAPI document needs none): its lazy loader
(``schemathesis.pytest.from_fixture``) sets ``Node._nodeid``, which pytest 9.2 no longer
has. Requests go in-process to the session's app, whose database the ``world`` fixture
resets for every operation, so what one operation's fuzzing writes cannot confuse the
next. The coverage phase (boundary values, missing fields, wrong types, other methods)
runs as the admin, who gets past authorization; generated ids often name real rows and
half the random bodies of the writing operations start from a valid body, so creates,
updates and reviews succeed too and their answers are checked against the schema.

A failure prints the request as ``curl``; ``pytest tests/test_api_fuzz.py -k "entries"``
narrows the run to matching operations.
"""

from __future__ import annotations

import gc
import json
import re
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from conftest import auth, create_entry, entry_body
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis.generation.meta import TestPhase
from schemathesis.python.asgi import ASGIClient
from sqlalchemy import select

from datatong.app import create_app
from datatong.catalog.ckan import ACTIONS
from datatong.catalog.models import CatalogClass
from datatong.db import session_scope
from datatong.orgs.models import User
from datatong.settings import Settings


def _openapi() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings_ = Settings(database_url="sqlite://", var_dir=Path(tmp), secret_key="openapi-only")
        return create_app(settings_, migrate=False).openapi()


EXAMPLES = 8  # per operation and caller, in the fuzzing phase (the coverage phase adds its own)
SLOW = 10.0  # seconds: an answer slower than this is a hang
# Operations that answer the same whoever calls (logging in): fuzzed anonymously only.
ANYONE = "^/api/v1/auth/(token|client-token)$"
CKAN_PATHS = ("/api/3/action/", "/api/action/")
ERROR_CODE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")
HAN = re.compile(r"[\u4e00-\u9fff]")


def _config(*, anonymous: bool) -> schemathesis.Config:
    operations: list[dict[str, Any]] = [
        {
            # One path serves every CKAN action, and an action ignores the parameters
            # it does not take (status_show reads none), as CKAN does: a parameter
            # of the wrong type is only refused by the actions that read it.
            "include-path-regex": "^/api/3/action/",
            "checks": {"negative_data_rejection": {"enabled": False}},
        },
    ]
    if anonymous:
        # The coverage phase's boundary and negative cases (hundreds for an entry body)
        # run once, as the admin, whom they get past authorization; an anonymous caller
        # gets the random examples only, except on the login operations.
        operations.append({"include-path-regex": f"^(?!{ANYONE[1:]})", "phases": {"coverage": {"enabled": False}}})
    return schemathesis.Config.from_dict(
        {
            "checks": {
                # The OpenAPI document types each field; the rules an entry must pass (a
                # known class code, a share condition for conditional sharing, a department
                # code's pattern …) live in service.py and answer 422 with a stable code,
                # so a schema-valid request may rightly be refused. (negative_data_rejection,
                # the converse, stays on.)
                "positive_data_acceptance": {"enabled": False},
            },
            "operations": operations,
        }
    )


OPENAPI = _openapi()
anonymous_schema = schemathesis.openapi.from_dict(OPENAPI, config=_config(anonymous=True))
admin_schema = schemathesis.openapi.from_dict(OPENAPI, config=_config(anonymous=False)).exclude(path_regex=ANYONE)

# Ids of rows the fixture made, so fuzzed path parameters sometimes hit real rows.
KNOWN: dict[str, list[Any]] = {}


def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any]) -> Any:
    """Most generated ids are swapped for ids of real rows (when there are any), and
    CKAN action names for real actions."""
    choices = [path_parameters]
    for name, value in (path_parameters or {}).items():
        if KNOWN.get(name):
            choices += [{**path_parameters, name: known} for known in KNOWN[name]]
        if name == "action" and value not in ACTIONS:
            choices += [{**path_parameters, name: action} for action in ACTIONS]
    return st.sampled_from(choices)


anonymous_schema.hook(flatmap_path_parameters)
admin_schema.hook(flatmap_path_parameters)


@pytest.fixture
def fuzz_client(app: Any, client: Any, settings: Settings, world: dict[str, Any]) -> Any:
    """The small city of ``world`` plus a draft and a published entry."""
    entries = [create_entry(client), create_entry(client, publish=True, name="企业登记信息")]
    with session_scope(settings.database_url) as session:
        users = list(session.scalars(select(User.id).order_by(User.id).limit(3)))
        classes = list(session.scalars(select(CatalogClass.id).order_by(CatalogClass.id).limit(3)))
    KNOWN.clear()
    KNOWN.update(
        entry_id=[e["id"] for e in entries],
        code=[e["code"] for e in entries],
        department_id=list(world["departments"].values())[:3],
        user_id=users,
        class_id=classes,
    )
    # Not entered: the suite's other clients do not run the app's lifespan either.
    return ASGIClient(app)


def check_error_shape(case: Any, response: Any) -> None:
    """Every refusal says what went wrong in the platform's (or CKAN's) shape."""
    status = response.status_code
    assert status < 500, f"{case.method} {case.formatted_path}: {status} {response.text[:500]}"
    if status < 400:
        return
    content_type = (response.headers.get("content-type") or [""])[0]
    assert content_type.startswith("application/json"), response.headers
    body = json.loads(response.content)
    if case.formatted_path.startswith(CKAN_PATHS):
        assert body["success"] is False and isinstance(body["help"], str), body
        error = body["error"]
        assert isinstance(error["__type"], str) and error["__type"], body
        assert isinstance(error["message"], str) and error["message"], body
        return
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error["code"], str) and ERROR_CODE.match(error["code"]), body
    assert isinstance(error["message"], str) and HAN.search(error["message"]), body
    assert isinstance(error["message_en"], str) and re.search("[A-Za-z]", error["message_en"]), body


# Random bodies almost never pass the rules (a known class code, codes from the code
# lists, a share condition for conditional sharing …), so creates and updates would
# only ever be refused. Half of the fuzzing phase's bodies for these operations are
# therefore a valid body with one or two of the generated fields put in.
VALID_BODIES: dict[tuple[str, str], Callable[[], dict[str, Any]]] = {
    ("POST", "/api/v1/catalog/entries"): lambda: entry_body(reason="模糊测试"),
    ("PUT", "/api/v1/catalog/entries/{entry_id}"): lambda: entry_body(reason="模糊测试修改"),
    ("POST", "/api/v1/catalog/entries/{entry_id}/review"): lambda: {"decision": "approve"},
    ("POST", "/api/v1/catalog/entries/{entry_id}/revoke"): lambda: {"reason": "模糊测试撤销"},
    ("POST", "/api/v1/catalog/classes"): lambda: {"code": "101099", "name": "模糊测试细目"},
    ("POST", "/api/v1/departments"): lambda: {"code": "FZ", "name": "模糊局", "level": "city", "parent_code": "SHI"},
    ("POST", "/api/v1/users"): lambda: {
        "username": "fuzz_user",
        "display_name": "模糊测试",
        "password": "Fuzz#Passw0rd-2026",
        "role": "data_officer",
        "department_code": "GA",
    },
}


def with_valid_base(case: Any) -> None:
    make = VALID_BODIES.get((case.method.upper(), case.path))
    meta = case.meta
    if make is None or not isinstance(case.body, dict) or meta is None or meta.phase.name != TestPhase.FUZZING:
        return
    # Derived from the body, so a derandomized run stays the same run.
    digest = zlib.crc32(json.dumps(case.body, sort_keys=True, default=str).encode())
    if digest % 2:
        return
    keys = sorted(case.body)
    kept = {keys[n % len(keys)] for n in (digest >> 1, digest >> 9)} if keys else set()
    # A new body: Schemathesis notices and re-decides whether the case is valid input.
    case.body = {**make(), **{key: case.body[key] for key in kept}}


def fuzz(case: Any, session: Any, headers: dict[str, str]) -> None:
    with_valid_base(case)
    started = time.monotonic()
    response = case.call(session=session, headers=headers)
    elapsed = time.monotonic() - started
    assert elapsed < SLOW, f"{case.method} {case.formatted_path} took {elapsed:.1f}s"
    check_error_shape(case, response)
    case.validate_response(response, headers=headers, transport_kwargs={"session": session, "headers": headers})


FUZZ_SETTINGS = hypothesis_settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.timeout(120)
@anonymous_schema.parametrize()
@FUZZ_SETTINGS
def test_fuzz_anonymous(case: Any, fuzz_client: Any) -> None:
    fuzz(case, fuzz_client, {})


@pytest.mark.timeout(120)
@admin_schema.parametrize()
@FUZZ_SETTINGS
def test_fuzz_platform_admin(case: Any, client: Any, fuzz_client: Any) -> None:
    fuzz(case, fuzz_client, auth(client, "admin"))


def test_orgs_times_have_an_offset(client: Any) -> None:
    headers = auth(client, "admin")
    times = [u["created_at"] for u in client.get("/api/v1/users", headers=headers).json()]
    times += [c["created_at"] for c in client.get("/api/v1/clients", headers=headers).json()]
    assert times and all(re.search(r"(Z|[+-]\d\d:\d\d)$", t) for t in times), times


# ---------------------------------------------------------------- what the fuzzer found


def test_every_operation_documents_its_error_shape(app: Any) -> None:
    """4xx answers are documented once for all (web/errors.install), CKAN's in its own
    envelope; FastAPI's {"detail": [...]} 422, which the app never sends, is gone."""
    doc = app.openapi()
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            model = "CkanErrorOut" if path.startswith("/api/3/action/") else "ErrorOut"
            errors = operation["responses"].get("4XX", {})
            assert errors["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{model}"}, (
                method,
                path,
            )


def test_undocumented_method_names_every_allowed_method(client: Any) -> None:
    # Starlette named only the first matching route's methods: "Allow: GET" for POST-able paths.
    r = client.request("OPTIONS", "/api/v1/departments")
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
    assert r.json()["error"]["code"] == "method_not_allowed"
    r = client.put("/api/v1/catalog/entries/1/versions")
    assert r.status_code == 405 and r.headers["allow"] == "GET"
    r = client.put("/catalog", headers={"accept": "text/html"})
    assert r.status_code == 405 and "GET" in r.headers["allow"]


def test_ckan_refuses_other_methods_in_its_own_envelope(client: Any) -> None:
    for path in ("/api/3/action/package_search", "/api/action/package_search"):
        for method in ("PUT", "DELETE", "OPTIONS"):
            r = client.request(method, path)
            assert r.status_code == 405 and r.headers["allow"] == "GET, POST", (method, path)
            body = r.json()
            assert body["success"] is False and body["error"]["__type"] == "Method Not Allowed", body


def test_times_in_answers_carry_an_offset(client: Any) -> None:
    """RFC 3339 (the OpenAPI date-time): SQLite handed back naive times, sent without offset."""
    entry = create_entry(client, publish=True)
    headers = auth(client, "ga_officer")
    offset = re.compile(r"(Z|[+-]\d\d:\d\d)$")
    shown = client.get(f"/api/v1/catalog/entries/{entry['id']}", headers=headers).json()
    found = client.get("/api/v1/catalog/entries", headers=headers).json()["results"]
    versions = client.get(f"/api/v1/catalog/entries/{entry['id']}/versions", headers=headers).json()
    times = [shown["created_at"], shown["modified_at"], found[0]["modified_at"], *(v["created_at"] for v in versions)]
    assert all(offset.search(t) for t in times), times


def test_modified_since_is_iso_8601_with_its_offset_honoured(client: Any) -> None:
    entry = create_entry(client, publish=True)
    headers = auth(client, "ga_officer")
    for path in ("/api/v1/catalog/entries", "/api/v1/catalog/dcat.jsonld", "/api/v1/catalog/export"):
        # Pydantic read a bare number as a Unix time: "0.5" meant 1970-01-01T00:00:00.5Z.
        r = client.get(path, params={"modified_since": "0.5"}, headers=headers)
        assert r.status_code == 422 and r.json()["error"]["field"] == "modified_since", (path, r.text)
    # SQLite compared the wall-clock digits: a minute before the change, written in
    # Beijing time (+08:00), was taken as eight hours later and found nothing.
    modified = datetime.fromisoformat(entry["modified_at"])
    beijing = timezone(timedelta(hours=8))
    for delta, expected in ((-60, 1), (60, 0)):
        since = (modified + timedelta(seconds=delta)).astimezone(beijing).isoformat()
        r = client.get("/api/v1/catalog/entries", params={"modified_since": since}, headers=headers)
        assert r.status_code == 200 and r.json()["total"] == expected, (since, r.text)
        naive_utc = (modified + timedelta(seconds=delta)).astimezone(UTC).replace(tzinfo=None).isoformat()
        r = client.get("/api/v1/catalog/entries", params={"modified_since": naive_utc}, headers=headers)
        assert r.status_code == 200 and r.json()["total"] == expected, (naive_utc, r.text)


def test_export_refuses_bad_search_before_writing_the_file(client: Any) -> None:
    """An unknown sort was found while the xlsx was half written; the abandoned
    workbook's writers then failed when collected ("Exception ignored in …")."""
    create_entry(client, publish=True)
    caught: list[Any] = []
    previous, sys.unraisablehook = sys.unraisablehook, caught.append
    try:
        r = client.get("/api/v1/catalog/export", params={"sort": "x"}, headers=auth(client, "admin"))
        gc.collect()
    finally:
        sys.unraisablehook = previous
    assert r.status_code == 422 and r.json()["error"]["code"] == "search.sort_invalid"
    assert not caught, [str(u.exc_value) for u in caught]
