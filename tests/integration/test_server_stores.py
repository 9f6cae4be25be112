"""The store contract against real Qdrant and Weaviate servers.

Each backend runs only when the environment names its server, e.g.
`RETRO_QDRANT_URL=http://localhost:6333` or `RETRO_WEAVIATE_URL=http://localhost:8080`
(`RETRO_WEAVIATE_GRPC_PORT`, default 50051); otherwise it is skipped with the reason. Every
test works in a fresh collection and drops it. No engine, no session server fixture.
"""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest

from retro_vllm.retrieval.stores.base import StoreError, VectorStore
from retro_vllm.retrieval.stores.qdrant_options import QdrantOptions
from retro_vllm.retrieval.stores.weaviate_options import WeaviateOptions
from retro_vllm.retrieval.types import Chunk

QDRANT_URL = os.environ.get("RETRO_QDRANT_URL")
WEAVIATE_URL = os.environ.get("RETRO_WEAVIATE_URL")
WEAVIATE_GRPC_PORT = int(os.environ.get("RETRO_WEAVIATE_GRPC_PORT", "50051"))
NO_QDRANT = pytest.mark.skipif(not QDRANT_URL, reason="no Qdrant server: set RETRO_QDRANT_URL")
NO_WEAVIATE = pytest.mark.skipif(not WEAVIATE_URL, reason="no Weaviate server: set RETRO_WEAVIATE_URL")


def qdrant_section(collection: str) -> QdrantOptions:
    return QdrantOptions(url=QDRANT_URL, collection=collection)


def weaviate_section(collection: str, multi_tenancy: bool = False) -> WeaviateOptions:
    return WeaviateOptions(
        url=WEAVIATE_URL, grpc_port=WEAVIATE_GRPC_PORT, collection=collection, multi_tenancy=multi_tenancy
    )


def drop_qdrant(collection: str) -> None:
    from qdrant_client import QdrantClient

    client = QdrantClient(url=QDRANT_URL, api_key=os.environ.get("QDRANT_API_KEY"))
    client.delete_collection(collection)
    client.close()


def drop_weaviate(collection: str) -> None:
    import weaviate as client_lib

    from retro_vllm.retrieval.stores.weaviate_schema import connection_args

    client = client_lib.connect_to_custom(**connection_args(weaviate_section(collection)))
    client.collections.delete(collection)
    client.close()


def open_store(backend: str, collection: str, dimension: int):
    if backend == "qdrant":
        from retro_vllm.retrieval.stores.qdrant import QdrantStore

        return QdrantStore(qdrant_section(collection), dimension)
    from retro_vllm.retrieval.stores.weaviate import WeaviateStore

    return WeaviateStore(weaviate_section(collection, multi_tenancy=backend == "weaviate-tenants"), dimension)


BACKENDS = [
    pytest.param("qdrant", marks=NO_QDRANT),
    pytest.param("weaviate", marks=NO_WEAVIATE),
    pytest.param("weaviate-tenants", marks=NO_WEAVIATE),
]


def unit(rows):
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def chunk(doc: str, domain: str = "geo", tenant: str | None = None, **meta) -> Chunk:
    return Chunk(id=f"{doc}#0", doc_id=doc, text=f"{doc} is a document about {domain}", domain=domain,
                 title=doc, tenant=tenant, metadata=meta)


CHUNKS = [chunk("x", lang="en"), chunk("y", domain="law", tenant="acme", lang="fr"), chunk("z", lang="fr", year=2024)]
VECTORS = unit([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0]])


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


def fresh_name() -> str:
    return f"Retro_test_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def collection(backend):
    name = fresh_name()
    yield name
    drop_qdrant(name) if backend == "qdrant" else drop_weaviate(name)


@pytest.fixture
def weaviate_collection():
    name = fresh_name()
    yield name
    drop_weaviate(name)


@pytest.fixture
def store(backend, collection):
    store = open_store(backend, collection, 3)
    store.upsert(CHUNKS, VECTORS)
    yield store
    store.close()


def ids(store, filters=None) -> list[str]:
    return [hit.chunk.id for hit in store.search(unit([1, 0, 0]), top_k=5, filters=filters)]


def test_satisfies_the_protocol_and_is_healthy(store):
    assert isinstance(store, VectorStore)
    store.health()


def test_search_orders_by_cosine_and_reads_chunks_back(store):
    hits = store.search(unit([1, 0, 0]), top_k=3)
    assert [h.chunk.id for h in hits] == ["x#0", "y#0", "z#0"]
    assert hits[0].score == pytest.approx(1.0, abs=1e-4) and hits[0].stage == "dense"
    assert {h.chunk.id: h.chunk for h in hits} == {c.id: c for c in CHUNKS}


def test_filters(store):
    assert ids(store, {"domain": "geo"}) == ["x#0", "z#0"]
    assert ids(store, {"lang": "fr"}) == ["y#0", "z#0"]
    assert ids(store, {"lang": ["en", "de"]}) == ["x#0"]
    assert ids(store, {"domain": "geo", "year": 2024}) == ["z#0"]
    assert ids(store, {"tenant": "acme"}) == ["y#0"]
    assert ids(store, {"id": "z#0"}) == ["z#0"]
    assert ids(store, {"color": "red"}) == [] and ids(store, {"domain": []}) == []
    assert store.count() == 3 and store.count({"lang": "fr"}) == 2
    assert sorted(c.id for c in store.chunks({"domain": "geo"})) == ["x#0", "z#0"]


def test_vectors_come_back_in_order(store):
    assert store.vectors(["z#0", "x#0"]) == pytest.approx(VECTORS[[2, 0]], abs=1e-5)
    with pytest.raises(StoreError, match="nope#0"):
        store.vectors(["nope#0"])


def test_reupsert_replaces_and_delete_counts(store):
    store.upsert([chunk("z", lang="de")], unit([[1, 0, 0]]))
    assert store.count() == 3 and ids(store, {"lang": "de"}) == ["z#0"]
    assert store.delete(doc_ids=["x", "missing"]) == 1
    assert store.count() == 2 and "x#0" not in ids(store)


def test_dimension_mismatch(backend, collection, store):
    with pytest.raises(StoreError, match="dimension 4 does not match the store's 3"):
        store.upsert([chunk("w")], unit([[1, 0, 0, 0]]))
    with pytest.raises(StoreError, match="dimension"):
        store.search(unit([1, 0]), top_k=1)
    assert store.count() == 3
    with pytest.raises(StoreError, match="dimension 3, the embedder makes 4"):
        open_store(backend, collection, 4)


@NO_WEAVIATE
def test_weaviate_keyword_search(weaviate_collection):
    store = open_store("weaviate", weaviate_collection, 3)
    store.upsert(CHUNKS, VECTORS)
    hits = store.keyword_search("law", top_k=5)
    assert [h.chunk.id for h in hits] == ["y#0"] and hits[0].stage == "bm25" and hits[0].scores["bm25"] > 0
    assert store.keyword_search("document", top_k=5, filters={"lang": "fr"})[0].chunk.id in ("y#0", "z#0")
    store.close()
