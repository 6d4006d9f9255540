from conftest import auth, create_entry


def test_create_search_publish(client):
    entry = create_entry(client, publish=True, is_open=True)
    assert entry["status"] == "published"
    r = client.get("/api/v1/catalog/entries", params={"q": "人口"})
    assert r.json()["total"] == 1
    r = client.get("/api/v1/catalog/entries", params={"q": "人口"}, headers=auth(client, "mz_officer"))
    assert [e["code"] for e in r.json()["results"]] == [entry["code"]]
