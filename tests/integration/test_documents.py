"""Ingestion over HTTP against the running server: a new index version is served without a
restart, documents are replaced and deleted, and bad input gets a precise error."""

import httpx
import pytest

pytestmark = pytest.mark.engine

TENANT = "test-documents"
DOC = {
    "id": "kb/zebra-protocol",
    "title": "The Zebra Routing Protocol",
    "url": "https://example.test/kb/zebra",
    "text": "The Zebra routing protocol exchanges routes every 17 seconds over UDP port 2601. "
            "Routers running Zebra elect a leader called the stripe master.",
    "metadata": {"source": "kb"},
}
QUERY = "How often does the Zebra routing protocol exchange routes?"


def post(server, body, status=200):
    response = httpx.post(f"{server.base_url}/v1/retro/documents", json=body, timeout=120)
    assert response.status_code == status, response.text
    return response.json()


def search(server, **body):
    response = httpx.post(f"{server.base_url}/v1/retro/search", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["passages"]


def test_add_search_replace_delete(retro_server, client):
    before = httpx.get(f"{retro_server.base_url}/v1/retro/domains").json()["index_version"]
    report = post(retro_server, {"domain": "networking", "tenant": TENANT, "documents": [DOC]})
    assert report["documents"]["added"] == 1 and report["chunks"]["added"] == 1
    assert report["index_version"] != before

    hits = search(retro_server, query=QUERY, domain="networking", filters={"tenant": TENANT})
    assert [h["id"] for h in hits] == ["kb/zebra-protocol#0"] and hits[0]["url"] == DOC["url"]
    assert search(retro_server, query=QUERY, filters={"tenant": "someone-else"}) == []

    # The same document again changes nothing (no new version); edited, it replaces its chunks.
    assert post(retro_server, {"domain": "networking", "tenant": TENANT, "documents": [DOC]})["documents"]["unchanged"] == 1
    edited = {**DOC, "text": DOC["text"].replace("17 seconds", "23 seconds")}
    assert post(retro_server, {"domain": "networking", "tenant": TENANT, "documents": [edited]})["documents"]["replaced"] == 1
    hits = search(retro_server, query=QUERY, domain="networking", filters={"tenant": TENANT})
    assert len(hits) == 1 and "23 seconds" in hits[0]["text"]

    answer = client.chat.completions.create(
        model="SmolLM2-135M-Instruct", max_tokens=24, temperature=0,
        messages=[{"role": "user", "content": QUERY}],
        extra_body={"retro": {"domain": "networking", "filters": {"tenant": TENANT}}},
    )
    assert [p["id"] for p in answer.model_extra["retro"]["passages"]] == ["kb/zebra-protocol#0"]

    deleted = httpx.delete(f"{retro_server.base_url}/v1/retro/documents/kb/zebra-protocol", timeout=120)
    assert deleted.status_code == 200 and deleted.json()["chunks"] == 1
    assert search(retro_server, query=QUERY, filters={"tenant": TENANT}) == []


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"domain": "astrology", "documents": [DOC]}, 400, "unknown_domain"),
        ({"domain": "networking", "documents": [{"id": "a#b", "text": "x"}]}, 400, "invalid_document"),
        ({"domain": "networking", "documents": [{"id": "x"}]}, 400, "invalid_document"),
        ({"domain": "networking", "documents": [DOC, DOC]}, 400, "invalid_document"),
        ({"domain": "networking"}, 400, "invalid_request"),
        ({"domain": "networking", "documents": [DOC], "extra": 1}, 400, "invalid_request"),
        ({"domain": "networking", "documents": [{"id": f"d{i}", "text": "x"} for i in range(1001)]}, 413, "request_too_large"),
    ],
)
def test_bad_documents_change_nothing(retro_server, body, status, code):
    version = httpx.get(f"{retro_server.base_url}/v1/retro/domains").json()["index_version"]
    error = post(retro_server, body, status)["error"]
    assert error["code"] == code and error["message"]
    assert httpx.get(f"{retro_server.base_url}/v1/retro/domains").json()["index_version"] == version


def test_delete_unknown_document_is_404(retro_server):
    response = httpx.delete(f"{retro_server.base_url}/v1/retro/documents/no/such/doc", timeout=60)
    assert response.status_code == 404 and response.json()["error"]["code"] == "document_not_found"


@pytest.mark.parametrize("fault, words", [("store_error", "injected store fault"), ("store_sleep", "within 2 s")])
def test_store_fault_is_503_and_the_server_serves_on(retro_server, client, fault, words):
    """The test server's store fails on demand (tests/support/fault_store.py)."""
    response = httpx.post(
        f"{retro_server.base_url}/v1/chat/completions", timeout=60,
        json={"model": "retro", "max_tokens": 4, "messages": [{"role": "user", "content": "What is DNS?"}],
              "retro": {"filters": {"test_fault": fault}}},
    )
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "retrieval_unavailable" and words in error["message"]
    ok = client.chat.completions.create(model="retro", max_tokens=4,
                                        messages=[{"role": "user", "content": "What is DNS?"}])
    assert ok.model_extra["retro"]["retrieval"] == "ok"
