import numpy as np
import pytest

from retro_vllm.retrieval.stores.base import StoreError, VectorStore
from retro_vllm.retrieval.stores.faiss import FaissStore
from retro_vllm.retrieval.types import Chunk


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def chunk(doc, n=0, domain="a", **meta):
    return Chunk(id=f"{doc}#{n}", doc_id=doc, text=f"{doc} {n}", domain=domain, title=doc, metadata=meta)


@pytest.fixture
def store():
    s = FaissStore(3)
    s.upsert(
        [chunk("x", domain="a", lang="en"), chunk("y", domain="b", lang="fr"), chunk("z", domain="a", lang="fr")],
        unit([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0]]),
    )
    return s


def test_satisfies_the_protocol(store):
    assert isinstance(store, VectorStore)


def test_search_orders_by_cosine(store):
    hits = store.search(unit([1, 0, 0]), top_k=3)
    assert [h.chunk.id for h in hits] == ["x#0", "y#0", "z#0"]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_filters(store):
    assert [h.chunk.id for h in store.search(unit([1, 0, 0]), top_k=3, filters={"domain": "a"})] == ["x#0", "z#0"]
    assert [h.chunk.id for h in store.search(unit([1, 0, 0]), top_k=3, filters={"lang": "fr"})] == ["y#0", "z#0"]
    assert [h.chunk.id for h in store.search(unit([1, 0, 0]), top_k=3, filters={"lang": ["en"]})] == ["x#0"]
    assert store.search(unit([1, 0, 0]), top_k=3, filters={"domain": "none"}) == []
    assert store.count({"domain": "a"}) == 2


def test_reupsert_replaces_and_delete_removes(store):
    store.upsert([chunk("z", domain="a")], unit([[1, 0, 0]]))
    assert store.count() == 3
    assert store.search(unit([1, 0, 0]), top_k=1, filters={"domain": "a", "id": "z#0"})[0].score == pytest.approx(1.0, abs=1e-5)
    assert store.delete(doc_ids=["x", "missing"]) == 1
    assert store.count() == 2
    assert "x#0" not in [h.chunk.id for h in store.search(unit([1, 0, 0]), top_k=5)]


def test_dimension_mismatch_changes_nothing(store):
    with pytest.raises(StoreError, match="dimension"):
        store.upsert([chunk("w")], unit([[1, 0, 0, 0]]))
    with pytest.raises(StoreError, match="dimension"):
        store.search(unit([1, 0]), top_k=1)
    assert store.count() == 3


def test_empty_store_returns_nothing():
    assert FaissStore(3).search(unit([1, 0, 0]), top_k=5) == []


def test_save_and_load_round_trip(store, tmp_path):
    store.save(tmp_path / "v")
    loaded = FaissStore.load(tmp_path / "v")
    assert loaded.count() == 3
    assert [h.chunk for h in loaded.search(unit([1, 0, 0]), top_k=3)] == [h.chunk for h in store.search(unit([1, 0, 0]), top_k=3)]


def test_corrupt_folder_is_a_store_error(store, tmp_path):
    store.save(tmp_path / "v")
    (tmp_path / "v" / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(StoreError, match="missing or corrupt"):
        FaissStore.load(tmp_path / "v")
