"""Errors outside any route: JSON for API clients, a Chinese page for browsers."""


def test_unknown_api_path_is_json(client):
    r = client.get("/api/v1/nothing-here")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


def test_unknown_page_is_html_for_browsers(client):
    r = client.get("/catalog/abc/def", headers={"accept": "text/html"})
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("text/html")
    assert "不存在" in r.text


def test_wrong_method_is_a_clear_json_error(client):
    r = client.delete("/api/v1/catalog/classes")
    assert r.status_code == 405
    assert r.json()["error"]["code"] == "method_not_allowed"


def test_ids_beyond_64_bits_are_not_found_not_500(client):
    from conftest import auth

    huge = "99999999999999999999"
    headers = auth(client, "admin")
    for path in (
        f"/api/v1/catalog/entries/{huge}",
        f"/api/v1/departments/{huge}",
        f"/api/v1/users/{huge}",
        f"/api/v1/catalog/entries/{huge}/versions",
        f"/api/v1/catalog/entries/{huge}/dcat.jsonld",
    ):
        r = client.get(path, headers=headers)
        assert r.status_code == 404, (path, r.status_code)
        assert r.json()["error"]["code"] == "not_found"
    r = client.patch(f"/api/v1/catalog/classes/{huge}", json={"name": "x"}, headers=headers)
    assert r.status_code == 404
    r = client.get("/api/3/action/package_show", params={"id": huge})
    assert r.status_code == 404 and r.json()["success"] is False
    r = client.get(f"/catalog/{huge}", headers={"accept": "text/html"})
    assert r.status_code == 404
