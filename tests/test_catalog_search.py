"""Chinese full-text search: segmentation, facets, relevance, keyset pages, index consistency."""

from __future__ import annotations

import pytest
from conftest import auth, create_entry, entry_body

from datatong.catalog import finder, service
from datatong.catalog.schemas import EntryIn
from datatong.db import session_scope
from datatong.errors import AppError
from datatong.orgs.models import User
from datatong.orgs.service import principal_for


def _search(client, user="mz_officer", **params):
    r = client.get("/api/v1/catalog/entries", params=params, headers=auth(client, user))
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def catalog(client):
    names = [
        ("户籍人口基本信息", "101", "conditional"),
        ("流动人口居住登记信息", "101", "unconditional"),
        ("企业登记注册信息", "102", "unconditional"),
        ("婚姻登记信息", "201", "conditional"),
    ]
    made = [
        create_entry(
            client,
            publish=True,
            name=n,
            class_code=c,
            share_type=s,
            keywords=None,
            summary=f"{n}，由部门业务系统每日汇聚",
        )
        for n, c, s in names
    ]
    create_entry(client, name="人口迁移草稿")  # a draft: invisible to other departments
    return made


def test_chinese_words_inside_longer_words_are_found(client, catalog):
    found = _search(client, q="人口")
    assert {r["name"] for r in found["results"]} == {"户籍人口基本信息", "流动人口居住登记信息"}
    assert _search(client, q="登记")["total"] == 3
    assert _search(client, q="居住 登记")["total"] == 1
    assert _search(client, q="卫星遥感")["total"] == 0


def test_data_item_names_and_department_are_searchable(client, catalog):
    assert _search(client, q="身份证号")["total"] == 4
    assert _search(client, q="公安局")["total"] == 4


def test_facets_and_filters(client, catalog):
    found = _search(client, q="信息")
    facets = {k: {v["value"]: v["count"] for v in vals} for k, vals in found["facets"].items()}
    assert facets["share_type"] == {"conditional": 2, "unconditional": 2}
    assert facets["class"] == {"101": 2, "102": 1, "201": 1}
    assert facets["provider"] == {"GA": 4}
    labels = {v["value"]: v["label"] for v in found["facets"]["share_type"]}
    assert labels["conditional"] == "有条件共享"
    assert _search(client, q="信息", share_type="conditional")["total"] == 2
    assert _search(client, q="信息", **{"class": "1"})["total"] == 3
    assert _search(client, provider="MZ")["total"] == 0


def test_relevance_prefers_title_matches(client, catalog):
    create_entry(client, publish=True, name="出生医学证明信息", summary="新生儿出生医学证明，含母亲户籍人口信息")
    results = _search(client, q="户籍")["results"]
    assert results[0]["name"] == "户籍人口基本信息"


def test_keyset_pages_cover_everything_once(client, catalog):
    seen: list[int] = []
    for sort in ("relevance", "modified", "name", "code"):
        seen = []
        cursor = None
        while True:
            params = {"q": "信息", "limit": 1, "sort": sort, **({"cursor": cursor} if cursor else {})}
            page = _search(client, **params)
            seen += [r["id"] for r in page["results"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert sorted(seen) == sorted(e["id"] for e in catalog), sort
    r = client.get("/api/v1/catalog/entries", params={"cursor": "garbage"}, headers=auth(client, "mz_officer"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "search.cursor_invalid"


def test_index_follows_edits_in_the_same_transaction(client, catalog, settings):
    e = catalog[0]
    body = entry_body(name="常住人口基本信息", reason="更名", summary="常住人口", keywords=None)
    client.put(f"/api/v1/catalog/entries/{e['id']}", json=body, headers=auth(client, "ga_officer"))
    assert _search(client, q="常住")["total"] == 1
    assert _search(client, q="户籍 基本")["total"] == 0
    # A change that fails half-way leaves neither the entry nor its index row behind.
    with session_scope(settings.database_url) as session:
        user = session.query(User).filter_by(username="ga_officer").one()
        who = principal_for(user)
    with pytest.raises(RuntimeError), session_scope(settings.database_url) as session:
        service.create_entry(session, who, EntryIn(**entry_body(name="水质监测信息")))
        raise RuntimeError("crash after the insert")
    assert _search(client, user="ga_officer", q="水质")["total"] == 0


def test_bad_sort_is_refused(client):
    r = client.get("/api/v1/catalog/entries", params={"sort": "random"}, headers=auth(client, "mz_officer"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "search.sort_invalid"


def test_search_service_refuses_anonymous_when_catalog_closed(client, catalog, settings):
    with session_scope(settings.database_url) as session, pytest.raises(AppError) as exc:
        from datatong.orgs.service import ANONYMOUS

        finder.search(session, ANONYMOUS, finder.SearchParams(), anonymous_catalog="none")
    assert exc.value.code == "unauthenticated"
