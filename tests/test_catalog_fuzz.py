"""Random bodies and queries never produce a 500 and never half-write an entry."""

from __future__ import annotations

from typing import Any

from conftest import auth, entry_body
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datatong.catalog import vocab

text = st.one_of(st.none(), st.text(max_size=40), st.sampled_from(["", " ", "人口", "有条件共享", "C", "platform"]))
item = st.fixed_dictionaries(
    {"name": st.text(max_size=20), "data_type": st.sampled_from([*vocab.DATA_TYPES, "X", ""])},
    optional={
        "length": st.one_of(st.none(), st.integers(-5, 2_000_000)),
        "sensitivity": st.sampled_from([*vocab.SENSITIVITIES, "绝密"]),
        "is_authoritative": st.booleans(),
    },
)
overrides = st.fixed_dictionaries(
    {},
    optional={
        "name": text,
        "summary": text,
        "class_code": st.sampled_from(["101", "1", "999", "", "20101"]),
        "share_type": st.sampled_from([*vocab.SHARE_TYPES, "有条件", ""]),
        "share_condition": text,
        "no_share_basis": text,
        "share_method": st.one_of(st.none(), st.sampled_from([*vocab.SHARE_METHODS, "fax"])),
        "update_cycle": st.sampled_from([*vocab.UPDATE_CYCLES, "hourly"]),
        "is_open": st.booleans(),
        "format_category": st.sampled_from([*vocab.FORMAT_CATEGORIES, "pdf"]),
        "items": st.lists(item, max_size=4),
        "release_date": st.sampled_from([None, "2026-02-30", "2026-01-01", "x"]),
    },
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=overrides)
def test_random_entries_are_created_or_refused_clearly(client, changes: dict[str, Any]) -> None:
    headers = auth(client, "ga_officer")
    before = client.get("/api/v1/catalog/entries", params={"status": "draft", "facets": False}, headers=headers)
    r = client.post("/api/v1/catalog/entries", json=entry_body(**changes), headers=headers)
    assert r.status_code in (201, 422), r.text
    after = client.get("/api/v1/catalog/entries", params={"status": "draft", "facets": False}, headers=headers)
    if r.status_code == 422:
        err = r.json()["error"]
        assert err["code"] and err["message"] and err["message_en"]
        assert after.json()["total"] == before.json()["total"]
    else:
        assert after.json()["total"] == before.json()["total"] + 1


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    q=st.text(max_size=30),
    sort=st.sampled_from(["relevance", "modified", "name", "code", "x"]),
    cursor=st.one_of(st.none(), st.text(max_size=30)),
    limit=st.integers(-3, 300),
)
def test_random_searches_answer_or_refuse_clearly(client, q: str, sort: str, cursor: str | None, limit: int) -> None:
    params: dict[str, Any] = {"q": q, "sort": sort, "limit": limit}
    if cursor is not None:
        params["cursor"] = cursor
    r = client.get("/api/v1/catalog/entries", params=params, headers=auth(client, "mz_officer"))
    assert r.status_code in (200, 422), r.text
    if r.status_code == 422:
        assert r.json()["error"]["code"] in ("validation_error", "search.cursor_invalid", "search.sort_invalid")


def test_nul_characters_are_refused_not_500(client):
    headers = auth(client, "ga_officer")
    r = client.post("/api/v1/catalog/entries", json=entry_body(name="人口\x00信息"), headers=headers)
    assert r.status_code in (201, 422), r.text  # SQLite stores NUL; PostgreSQL cannot
    drafts = client.get("/api/v1/catalog/entries", params={"status": "draft"}, headers=headers).json()["total"]
    if r.status_code == 422:
        assert r.json()["error"]["code"] == "invalid_value"
        assert drafts == 0  # rolled back: no entry, no version, no index row
    r = client.get("/catalog", params={"provider": "G\x00A"}, headers={**headers, "accept": "text/html"})
    assert r.status_code in (200, 422)
    for params in ({"q": "人口\x00"}, {"provider": "G\x00A"}, {"cursor": "\x00"}):
        r = client.get("/api/v1/catalog/entries", params=params, headers=headers)
        assert r.status_code in (200, 422), (params, r.text)
    r = client.post("/api/v1/auth/token", json={"username": "ga\x00officer", "password": "x\x00"})
    assert r.status_code in (401, 422)
