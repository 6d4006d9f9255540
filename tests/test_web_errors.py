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
