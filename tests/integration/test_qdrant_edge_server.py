"""The same endpoint on another backend: `retro-vllm serve` with `retrieval.backend: qdrant-edge`
(the Qdrant engine in-process) and `mode: hybrid`, no code change. One module-scoped server."""

import sys

import httpx
import pytest
import yaml

from tests.conftest import SERVER_ARGS, Server, free_port, server_env

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def edge_server(model_path, tmp_path_factory):
    from retro_vllm.config import write_demo_config

    path = write_demo_config(tmp_path_factory.mktemp("edge-home"), model_path)
    raw = yaml.safe_load(path.read_text())
    raw["retrieval"].update(backend="qdrant-edge", mode="hybrid", rerank={"method": "mmr"})
    path.write_text(yaml.safe_dump(raw))
    port = free_port()
    command = [sys.executable, "-m", "retro_vllm.cli", "serve", "--config", str(path), "--port", str(port), *SERVER_ARGS]
    server = Server("retro-edge", command, server_env(path.parent), port, tmp_path_factory.mktemp("edge-logs"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_routed_answer_with_citations_from_qdrant_edge(edge_server):
    from openai import OpenAI

    client = OpenAI(base_url=f"{edge_server.base_url}/v1", api_key="unused", max_retries=0, timeout=300)
    response = client.chat.completions.create(
        model="retro", max_tokens=48, temperature=0,
        messages=[{"role": "user", "content": "Which port does HTTPS use by default?"}],
    )
    retro = response.model_extra["retro"]
    assert retro["domain"] == "networking" and retro["retrieval"] == "ok" and retro["passages"]
    assert all(p["stage"] == "mmr" and {"hybrid", "mmr"} <= set(p["scores"]) for p in retro["passages"])
    assert any("dense" in p["scores"] for p in retro["passages"])
    urls = {p["url"] for p in retro["passages"]}
    for annotation in response.choices[0].message.annotations or []:
        assert annotation.url_citation.url in urls


def test_ingest_and_search_on_qdrant_edge(edge_server):
    base = edge_server.base_url
    doc = {"id": "kb-semaphore", "text": "The semaphore tower on Signal Hill relays flag messages every 9 minutes."}
    added = httpx.post(f"{base}/v1/retro/documents", json={"domain": "networking", "documents": [doc]}, timeout=120)
    assert added.status_code == 200, added.text
    hits = httpx.post(f"{base}/v1/retro/search", json={"query": "semaphore tower flag messages", "top_k": 2},
                      timeout=60).json()["passages"]
    assert hits[0]["id"] == "kb-semaphore#0"
    assert httpx.delete(f"{base}/v1/retro/documents/kb-semaphore", timeout=120).status_code == 200
    hits = httpx.post(f"{base}/v1/retro/search", json={"query": "semaphore tower flag messages", "top_k": 2},
                      timeout=60).json()["passages"]
    assert all(h["id"] != "kb-semaphore#0" for h in hits)
