"""DCAT-AP 3 JSON-LD export: parses offline, pages by cursor, respects visibility."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import auth, create_entry
from fastapi.testclient import TestClient
from pyld import jsonld
from sqlalchemy import update

from datatong.app import create_app
from datatong.catalog.models import CatalogEntry
from datatong.db import session_scope

DCAT = "http://www.w3.org/ns/dcat#"
DCT = "http://purl.org/dc/terms/"
NS = "https://datatong.example/ns#"
EXPORT = "/api/v1/catalog/dcat.jsonld"


def _no_fetch(url: str, options: Any = None) -> Any:
    raise AssertionError(f"the export must not need a remote document: {url}")


OFFLINE = {"documentLoader": _no_fetch}


def _nodes(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of the document, flattened (offline: the context is inline)."""
    return list(jsonld.flatten(doc, None, OFFLINE))


def _datasets(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """dcat:Dataset nodes by dct:identifier."""
    out = {}
    for node in _nodes(doc):
        if DCAT + "Dataset" in node.get("@type", []):
            out[node[DCT + "identifier"][0]["@value"]] = node
    return out


def _iri(node: dict[str, Any], prop: str) -> str:
    return str(node[prop][0]["@id"])


def _world_entries(client: TestClient) -> dict[str, dict[str, Any]]:
    """Open, shared-not-open, not-shared and draft entries of two departments."""
    return {
        "open": create_entry(client, publish=True, is_open=True, keywords="人口，户籍、身份"),
        "open_mz": create_entry(
            client,
            "mz_officer",
            publish=True,
            is_open=True,
            name="婚姻登记信息",
            class_code="102",
            update_cycle="realtime",
            online_url="https://data.example.cn/hydj.csv",
            format_type="csv",
        ),
        "shared": create_entry(client, publish=True, name="流动人口信息", update_cycle="irregular"),
        "none": create_entry(
            client,
            publish=True,
            name="涉密人口信息",
            share_type="none",
            share_condition=None,
            share_method=None,
            share_subtype=None,
            no_share_basis="《中华人民共和国保守国家秘密法》",
        ),
        "draft": create_entry(client, is_open=True, name="草稿人口信息"),
    }


def test_catalog_parses_offline_with_mapped_fields(client: TestClient) -> None:
    e = _world_entries(client)
    r = client.get(EXPORT)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/ld+json")
    doc = r.json()
    assert isinstance(doc["@context"], dict)  # inline, nothing to fetch
    datasets = _datasets(doc)
    assert set(datasets) == {e["open"]["code"], e["open_mz"]["code"]}

    ga = datasets[e["open"]["code"]]
    entry_id = e["open"]["id"]
    assert ga["@id"] == f"http://testserver/api/v1/catalog/entries/{entry_id}/dcat.jsonld"
    assert ga[DCT + "title"] == [{"@value": "户籍人口基本信息", "@language": "zh"}]
    assert {k["@value"] for k in ga[DCAT + "keyword"]} == {"人口", "户籍", "身份"}
    assert _iri(ga, DCAT + "landingPage") == f"http://testserver/catalog/{entry_id}"
    assert _iri(ga, DCT + "accrualPeriodicity").endswith("/frequency/DAILY")
    assert _iri(ga, DCT + "accessRights").endswith("/access-right/PUBLIC")
    assert _iri(ga, "http://www.w3.org/ns/adms#status") == "http://purl.org/adms/status/Completed"
    assert ga[DCT + "issued"][0]["@type"] == "http://www.w3.org/2001/XMLSchema#date"

    mz = datasets[e["open_mz"]["code"]]
    assert _iri(mz, DCT + "accrualPeriodicity").endswith("/frequency/UPDATE_CONT")
    by_id = {n["@id"]: n for n in _nodes(doc)}
    dist = by_id[_iri(mz, DCAT + "distribution")]
    assert _iri(dist, DCAT + "accessURL") == "https://data.example.cn/hydj.csv"
    assert _iri(dist, DCT + "format").endswith("/file-type/CSV")
    agent = by_id[_iri(mz, DCT + "publisher")]
    assert agent[DCT + "identifier"][0]["@value"] == "MZ"
    assert agent["http://xmlns.com/foaf/0.1/name"][0]["@value"] == "示范市民政局"
    concept = by_id[_iri(mz, DCAT + "theme")]
    assert concept["http://www.w3.org/2004/02/skos/core#notation"][0]["@value"] == "102"


def test_access_rights_and_extension_for_signed_in_users(client: TestClient) -> None:
    e = _world_entries(client)
    doc = client.get(EXPORT, headers=auth(client, "mz_officer")).json()
    datasets = _datasets(doc)
    # Published entries of every department, never another department's draft.
    assert set(datasets) == {e[k]["code"] for k in ("open", "open_mz", "shared", "none")}
    rights = {code: _iri(n, DCT + "accessRights").rsplit("/", 1)[1] for code, n in datasets.items()}
    assert rights[e["shared"]["code"]] == "RESTRICTED"
    assert rights[e["none"]["code"]] == "NON_PUBLIC"
    shared = datasets[e["shared"]["code"]]
    assert _iri(shared, DCT + "accrualPeriodicity").endswith("/frequency/IRREG")
    assert shared[NS + "shareType"][0]["@value"] == "conditional"
    # Only the platform operator learns why a resource is not shared.
    assert NS + "noShareBasis" not in datasets[e["none"]["code"]]
    admin_doc = client.get(EXPORT, headers=auth(client, "admin")).json()
    basis = _datasets(admin_doc)[e["none"]["code"]][NS + "noShareBasis"][0]["@value"]
    assert basis == "《中华人民共和国保守国家秘密法》"


def test_cursor_paging_returns_every_entry_once(client: TestClient) -> None:
    codes = {create_entry(client, publish=True, is_open=True, name=f"人口信息{i}")["code"] for i in range(7)}
    url: str | None = EXPORT + "?limit=3"
    seen: list[str] = []
    pages = 0
    while url:
        doc = client.get(url).json()
        assert doc["hydra:totalItems"] == 7
        assert doc["hydra:view"]["@type"] == "hydra:PartialCollectionView"
        seen.extend(_datasets(doc))
        url = doc["hydra:view"].get("hydra:next", {}).get("@id")
        assert url is None or url.startswith("http://testserver/api/v1/catalog/dcat.jsonld?")
        pages += 1
    assert pages == 3
    assert len(seen) == len(set(seen)) == 7
    assert set(seen) == codes


def test_modified_since_filters(client: TestClient, settings: Any) -> None:
    old = create_entry(client, publish=True, is_open=True, name="历史人口信息")
    new = create_entry(client, publish=True, is_open=True, name="最新人口信息")
    with session_scope(settings.database_url) as session:
        session.execute(
            update(CatalogEntry)
            .where(CatalogEntry.id == old["id"])
            .values(modified_at=datetime(2020, 1, 1, tzinfo=UTC))
        )
    for since in ("2021-06-01T00:00:00Z", "2021-06-01T08:00:00+08:00", "2021-06-01T00:00:00"):
        doc = client.get(EXPORT, params={"modified_since": since}).json()
        assert set(_datasets(doc)) == {new["code"]}, since
    doc = client.get(EXPORT, params={"modified_since": "2019-01-01T00:00:00Z"}).json()
    assert set(_datasets(doc)) == {old["code"], new["code"]}


def test_single_entry_and_visibility(client: TestClient) -> None:
    e = _world_entries(client)
    r = client.get(f"/api/v1/catalog/entries/{e['open']['id']}/dcat.jsonld")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/ld+json")
    doc = r.json()
    (node,) = _datasets(doc).values()
    schema = {n["@id"]: n for n in _nodes(doc)}[_iri(node, DCT + "conformsTo")]
    items = schema[NS + "items"][0]["@list"]
    assert len(items) == 3
    first = {n["@id"]: n for n in _nodes(doc)}[items[0]["@id"]]
    assert first[NS + "code"][0]["@value"] == "SFZH"
    assert first[NS + "dataType"][0]["@value"] == "C"

    def get(key: str, user: str | None = None) -> Any:
        headers = auth(client, user) if user else {}
        return client.get(f"/api/v1/catalog/entries/{e[key]['id']}/dcat.jsonld", headers=headers)

    for key in ("shared", "none", "draft"):
        assert get(key).status_code == 404, key
    assert get("shared", "mz_officer").status_code == 200
    assert get("draft", "mz_officer").status_code == 404  # another department's draft
    draft = get("draft", "ga_officer").json()
    assert draft["adms:status"]["@id"] == "http://purl.org/adms/status/UnderDevelopment"
    assert client.get("/api/v1/catalog/entries/999999/dcat.jsonld").status_code == 404


def test_unpublished_only_on_request(client: TestClient) -> None:
    e = _world_entries(client)
    ga = auth(client, "ga_officer")
    assert e["draft"]["code"] not in _datasets(client.get(EXPORT, headers=ga).json())
    doc = client.get(EXPORT, params={"include_unpublished": "true"}, headers=ga).json()
    assert e["draft"]["code"] in _datasets(doc)
    # Anonymous callers never see drafts, whatever they ask for.
    doc = client.get(EXPORT, params={"include_unpublished": "true"}).json()
    assert e["draft"]["code"] not in _datasets(doc)


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "cursor=not-a-cursor"])
def test_bad_paging_parameters(client: TestClient, query: str) -> None:
    assert client.get(f"{EXPORT}?{query}").status_code == 422


def test_anonymous_catalog_setting(client: TestClient, settings: Any) -> None:
    """What the public sees follows settings.anonymous_catalog, like the rest of the API."""
    e = _world_entries(client)
    published = TestClient(create_app(replace(settings, anonymous_catalog="published"), migrate=False))
    codes = set(_datasets(published.get(EXPORT).json()))
    assert codes == {e[k]["code"] for k in ("open", "open_mz", "shared", "none")}
    closed = TestClient(create_app(replace(settings, anonymous_catalog="none"), migrate=False))
    assert closed.get(EXPORT).status_code == 401
    assert closed.get(f"/api/v1/catalog/entries/{e['open']['id']}/dcat.jsonld").status_code == 404
