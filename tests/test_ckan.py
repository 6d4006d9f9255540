"""The CKAN-compatible API, driven by the real ``ckanapi`` client and CLI over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import ckanapi
import httpx
import pytest
from conftest import auth, create_entry
from fastapi.testclient import TestClient

from datatong.app import create_app

BIN = Path(sys.executable).parent
CKANAPI_CLI = str(BIN / "ckanapi")


@pytest.fixture
def entries(client: TestClient) -> dict[str, dict[str, Any]]:
    """Published open entries of 公安 (GA) and 民政 (MZ), plus some the public must not see."""
    return {
        "hj": create_entry(client, publish=True, is_open=True),
        "ld": create_entry(
            client,
            publish=True,
            is_open=True,
            name="流动人口信息",
            keywords="人口,流动",
            update_cycle="monthly",
            format_category="spreadsheet",
            format_type="xlsx",
        ),
        "ln": create_entry(
            client,
            "mz_officer",
            publish=True,
            is_open=True,
            name="老年人口信息",
            class_code="203",
            keywords="人口,养老",
            share_type="unconditional",
            share_condition=None,
            online_url="https://data.example.cn/ln.csv",
            format_category="file",
            format_type="csv",
        ),
        "hy": create_entry(
            client,
            "mz_officer",
            publish=True,
            is_open=True,
            name="婚姻登记信息",
            summary="婚姻登记的结婚、离婚记录",
            keywords="婚姻",
        ),
        "closed": create_entry(client, publish=True, name="人口迁移记录"),
        "draft": create_entry(client, is_open=True, name="人口普查草稿"),
    }


@pytest.fixture
def ckan(live_server: str) -> ckanapi.RemoteCKAN:
    return ckanapi.RemoteCKAN(live_server)


def _extras(package: dict[str, Any]) -> dict[str, str]:
    return {e["key"]: e["value"] for e in package["extras"]}


def _codes(result: dict[str, Any]) -> list[str]:
    return [p["id"] for p in result["results"]]


def test_package_search_finds_published_open_entries(entries: Any, ckan: Any) -> None:
    result = ckan.action.package_search(q="人口")
    assert result["count"] == 3
    assert set(_codes(result)) == {entries[k]["code"] for k in ("hj", "ld", "ln")}
    pkg = next(p for p in result["results"] if p["id"] == entries["ln"]["code"])
    assert pkg["name"] == entries["ln"]["code"].lower()
    assert pkg["title"] == "老年人口信息"
    assert pkg["organization"]["name"] == "MZ" and pkg["owner_org"] == "MZ"
    assert pkg["organization"]["title"] == "示范市民政局"
    assert {t["name"] for t in pkg["tags"]} == {"人口", "养老"}
    assert pkg["resources"][0]["format"] == "csv"
    assert pkg["resources"][0]["url"] == "https://data.example.cn/ln.csv"
    assert pkg["state"] == "active" and pkg["private"] is False
    extras = _extras(pkg)
    assert extras["share_type"] == "无条件共享" and extras["share_type_code"] == "unconditional"
    assert extras["update_cycle"] == "每日"
    assert [i["code"] for i in json.loads(extras["data_items"])] == ["SFZH", "XM", "CSRQ"]
    # Everything, with *:* or an empty q, is the four published open entries.
    assert ckan.action.package_search(q="*:*")["count"] == 4
    assert ckan.action.package_search()["count"] == 4


def test_facets(entries: Any, ckan: Any) -> None:
    fields = ["organization", "res_format", "update_cycle", "tags"]
    result = ckan.call_action("package_search", {"q": "*:*", "rows": 0, "facet.field": fields})
    assert result["results"] == [] and result["count"] == 4
    orgs = {i["name"]: i for i in result["search_facets"]["organization"]["items"]}
    assert {k: v["count"] for k, v in orgs.items()} == {"GA": 2, "MZ": 2}
    assert orgs["MZ"]["display_name"] == "示范市民政局"
    assert result["facets"]["res_format"] == {"database": 2, "spreadsheet": 1, "file": 1}
    cycles = {i["name"]: i["display_name"] for i in result["search_facets"]["update_cycle"]["items"]}
    assert cycles == {"daily": "每日", "monthly": "每月"}
    assert result["search_facets"]["tags"] == {"title": "tags", "items": []}
    # A facet the client takes from the answer filters to exactly its count.
    for item in result["search_facets"]["res_format"]["items"]:
        found = ckan.action.package_search(fq=f"res_format:{item['name']}")
        assert found["count"] == item["count"]


def test_fq_filters(entries: Any, ckan: Any) -> None:
    def codes(**kw: Any) -> set[str]:
        return set(_codes(ckan.action.package_search(**kw)))

    assert codes(fq="organization:MZ") == {entries["ln"]["code"], entries["hy"]["code"]}
    assert codes(q="人口", fq="organization:mz") == {entries["ln"]["code"]}
    assert codes(fq="+organization:GA AND res_format:电子表格") == {entries["ld"]["code"]}
    assert codes(fq="share_type:有条件共享 update_cycle:monthly") == {entries["ld"]["code"]}
    assert codes(fq="tags:养老") == {entries["ln"]["code"]}
    assert codes(fq="groups:203 dataset_type:dataset") == {entries["ln"]["code"]}
    assert codes(fq="metadata_modified:[2000-01-01T00:00:00Z TO *]") == {
        entries[k]["code"] for k in ("hj", "ld", "ln", "hy")
    }
    assert codes(fq="metadata_modified:[2999-01-01T00:00:00Z TO *]") == set()
    assert codes(fq="organization:NOPE") == set()
    assert codes(fq="organization:GA organization:MZ") == set()
    for bad in ("license_id:cc-by", "-organization:GA", "organization:(GA OR MZ)"):
        with pytest.raises(ckanapi.ValidationError):
            ckan.action.package_search(fq=bad)


def test_rows_and_start_page_consistently(client: TestClient, ckan: Any) -> None:
    codes = {create_entry(client, publish=True, is_open=True, name=f"人口信息{i:02d}")["code"] for i in range(9)}
    for sort in ("title_string asc", "metadata_modified desc", "name asc", "score desc"):
        everything = ckan.action.package_search(q="人口", sort=sort, rows=1000)
        assert everything["count"] == 9 and set(_codes(everything)) == codes
        pages: list[str] = []
        for start in range(0, 12, 4):
            page = ckan.action.package_search(q="人口", sort=sort, rows=4, start=start)
            assert page["count"] == 9
            pages.extend(_codes(page))
        assert pages == _codes(everything), sort
    titles = [p["title"] for p in ckan.action.package_search(sort="title_string asc", rows=3)["results"]]
    assert titles == ["人口信息00", "人口信息01", "人口信息02"]
    for bad in ({"rows": 1001}, {"rows": "many"}, {"start": -1}, {"sort": "metadata_modified asc"}):
        with pytest.raises(ckanapi.ValidationError):
            ckan.action.package_search(**bad)


def test_package_show_and_list(entries: Any, ckan: Any, client: TestClient, live_server: str) -> None:
    code = entries["hj"]["code"]
    for ident in (code, code.lower(), str(entries["hj"]["id"])):
        pkg = ckan.action.package_show(id=ident)
        assert pkg["id"] == code and pkg["title"] == "户籍人口基本信息"
    assert pkg["url"] == f"{live_server}/catalog/{entries['hj']['id']}"
    assert _extras(pkg)["dcat_jsonld"].endswith(f"/entries/{entries['hj']['id']}/dcat.jsonld")
    for missing in (
        "no-such-package",
        entries["closed"]["code"],
        entries["draft"]["code"],
        str(entries["closed"]["id"]),
    ):
        with pytest.raises(ckanapi.NotFound):
            ckan.action.package_show(id=missing)
    assert sorted(ckan.action.package_list()) == sorted(entries[k]["code"].lower() for k in ("hj", "ld", "ln", "hy"))

    # A signed-in department passes its token as the CKAN API key and sees more.
    token = auth(client, "mz_officer")["Authorization"].split()[1]
    signed_in = ckanapi.RemoteCKAN(live_server, apikey=token)
    assert signed_in.action.package_show(id=entries["closed"]["code"])["isopen"] is False
    assert len(signed_in.action.package_list()) == 5
    with pytest.raises(ckanapi.NotFound):
        signed_in.action.package_show(id=entries["draft"]["code"])
    with pytest.raises(ckanapi.NotAuthorized):
        ckanapi.RemoteCKAN(live_server, apikey="not-a-token").action.package_list()


def test_organizations(entries: Any, ckan: Any, client: TestClient, live_server: str) -> None:
    # The public sees the departments whose resources it can already see.
    assert ckan.action.organization_list() == ["GA", "MZ"]
    orgs = ckan.action.organization_list(all_fields=True, sort="package_count desc")
    assert [(o["name"], o["title"], o["package_count"]) for o in orgs] == [
        ("GA", "示范市公安局", 2),
        ("MZ", "示范市民政局", 2),
    ]
    mz = ckan.action.organization_show(id="MZ")
    assert mz["title"] == "示范市民政局" and mz["package_count"] == 2
    with_datasets = ckan.action.organization_show(id="mz", include_datasets=True)
    assert {p["id"] for p in with_datasets["packages"]} == {
        entries["ln"]["code"],
        entries["hy"]["code"],
    }
    for missing in ("SJ", "NOPE"):
        with pytest.raises(ckanapi.NotFound):
            ckan.action.organization_show(id=missing)

    token = auth(client, "ga_officer")["Authorization"].split()[1]
    signed_in = ckanapi.RemoteCKAN(live_server, apikey=token)
    assert signed_in.action.organization_list() == ["DSJ", "GA", "MZ", "SHI", "SJ"]
    assert signed_in.action.organization_show(id="GA")["package_count"] == 3
    assert signed_in.action.organization_show(id="SJ")["package_count"] == 0


def test_status_show(world: Any, ckan: Any, live_server: str) -> None:
    status = ckan.action.status_show()
    assert status["ckan_version"].startswith("2.10")
    assert status["site_title"] == "数据通"
    assert status["site_url"] == live_server
    assert "datatong" in status["extensions"]


def test_raw_http_shapes(entries: Any, live_server: str) -> None:
    with httpx.Client(base_url=live_server) as http:
        r = http.get(
            "/api/3/action/package_search",
            params={"q": "人口", "facet.field": '["organization"]', "rows": "1"},
        )
        body = r.json()
        assert r.status_code == 200 and body["success"] is True
        assert body["help"].endswith("/api/3/action/help_show?name=package_search")
        assert body["result"]["count"] == 3 and len(body["result"]["results"]) == 1
        r = http.post("/api/3/action/package_search", data={"fq": "organization:MZ"})
        assert r.json()["result"]["count"] == 2
        r = http.post("/api/3/action/no_such_action", json={})
        assert r.status_code == 400 and r.json()["success"] is False
        r = http.get("/api/3/action/package_show", params={"id": "nope"})
        assert r.status_code == 404
        assert r.json()["error"]["__type"] == "Not Found Error"
        r = http.get("/api/3/action/package_show")
        assert r.status_code == 409 and r.json()["error"]["__type"] == "Validation Error"
        r = http.post(
            "/api/3/action/package_search",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 400 and r.json()["success"] is False
        r = http.get("/api/3/action/help_show", params={"name": "package_search"})
        assert "q, fq, rows" in r.json()["result"]
        assert http.get("/api/3").json() == {"version": 3}


def test_ckanapi_cli(entries: Any, live_server: str, tmp_path: Path) -> None:
    out = subprocess.run(
        [CKANAPI_CLI, "action", "package_search", "q=人口", "-r", live_server],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(out.stdout)
    assert result["count"] >= 1 and result["count"] == 3
    # A harvester's full dump: package_list, then package_show for every name.
    dump = tmp_path / "datasets.jsonl"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # its workers
    out = subprocess.run(
        [CKANAPI_CLI, "dump", "datasets", "--all", "-q", "-O", str(dump), "-r", live_server],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    dumped = [json.loads(line) for line in dump.read_text().splitlines()]
    assert sorted(p["id"] for p in dumped) == sorted(entries[k]["code"] for k in ("hj", "ld", "ln", "hy"))


def test_closed_catalog_refuses_anonymous_callers(entries: Any, client: TestClient, settings: Any) -> None:
    closed = TestClient(create_app(replace(settings, anonymous_catalog="none"), migrate=False))
    r = closed.get("/api/3/action/package_search", params={"q": "人口"})
    assert r.status_code == 403
    assert r.json()["error"]["__type"] == "Authorization Error"
    assert closed.get("/api/3/action/organization_list").status_code == 403
    r = closed.get("/api/3/action/package_search", headers=auth(client, "mz_officer"))
    assert r.status_code == 200 and r.json()["result"]["count"] == 5
