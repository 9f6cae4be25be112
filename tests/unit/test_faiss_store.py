"""What only the FAISS store does: choosing flat or HNSW, and keeping an HNSW graph exact under
deletes. The behaviour all stores share is in test_store_contract.py."""

import json

import faiss
import numpy as np
import pytest

from retro_vllm.retrieval.stores import faiss as faiss_store
from retro_vllm.retrieval.stores.base import StoreError
from retro_vllm.retrieval.stores.faiss import FaissStore
from retro_vllm.retrieval.types import Chunk

DIMENSION = 16


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def corpus(n, seed=0):
    vectors = unit(np.random.default_rng(seed).normal(size=(n, DIMENSION)))
    chunks = [
        Chunk(id=f"d{i}#0", doc_id=f"d{i}", text="", domain="ab"[i % 2], metadata={"bucket": i % 50}) for i in range(n)
    ]
    return chunks, vectors


def written(folder):
    index = faiss.read_index(str(folder / faiss_store.INDEX_FILE))
    return index, json.loads((folder / "meta.json").read_text())


def test_auto_picks_hnsw_at_the_threshold_when_flushing(tmp_path):
    chunks, vectors = corpus(60)
    store = FaissStore.create(tmp_path / "s", DIMENSION, hnsw_above=50)
    store.upsert(chunks[:49], vectors[:49])
    store.flush()
    assert store.mode == "flat" and written(tmp_path / "s")[1]["mode"] == "flat"
    store.upsert(chunks[49:50], vectors[49:50])
    assert store.mode == "flat"
    store.flush()
    assert store.mode == "hnsw" and written(tmp_path / "s")[1]["mode"] == "hnsw"
    assert FaissStore.open(tmp_path / "s", hnsw_above=50).mode == "hnsw"
    store.delete(doc_ids=["d0"])
    store.flush()
    assert store.mode == "flat" and FaissStore.open(tmp_path / "s", hnsw_above=50).mode == "flat"


def test_hnsw_delete_is_exact_before_and_after_the_rebuild(tmp_path):
    chunks, vectors = corpus(300)
    store = FaissStore.create(tmp_path / "s", DIMENSION, index="hnsw")
    store.upsert(chunks, vectors)
    store.flush()
    gone = {f"d{i}" for i in range(0, 300, 3)}
    assert store.delete(doc_ids=sorted(gone)) == 100
    store.upsert([chunks[1]], unit([vectors[2]]))
    store.health()
    for query in vectors[:20]:
        hits = store.search(query, top_k=10)
        assert len(hits) == 10 and not {h.chunk.doc_id for h in hits} & gone
    assert store.search(vectors[2], top_k=2)[0].score == pytest.approx(1.0, abs=1e-3)  # fp16 vectors

    store.flush()
    index, meta = written(tmp_path / "s")
    assert index.ntotal == store.count() == meta["count"] == 200
    reopened = FaissStore.open(tmp_path / "s", index="hnsw")
    assert reopened.mode == "hnsw"
    assert not {h.chunk.doc_id for h in reopened.search(vectors[0], top_k=50)} & gone


def test_filtered_hnsw_search_fills_top_k(tmp_path, monkeypatch):
    monkeypatch.setattr(faiss_store, "EXACT_FILTER_LIMIT", 0)
    chunks, vectors = corpus(2000)
    store = FaissStore.create(tmp_path / "s", DIMENSION, index="hnsw", ef_search=64)
    store.upsert(chunks, vectors)
    query = unit(np.random.default_rng(1).normal(size=DIMENSION))
    for filters in ({"domain": "a"}, {"bucket": 3}):
        allowed = [i for i, c in enumerate(chunks) if faiss_store.matches(c, filters)]
        expected = {chunks[i].id for i in sorted(allowed, key=lambda i: -float(vectors[i] @ query))[:10]}
        got = {h.chunk.id for h in store.search(query, top_k=10, filters=filters)}
        assert len(got) == 10 and len(got & expected) >= 9


def test_a_short_graph_walk_falls_back_to_exact_scoring(tmp_path, monkeypatch):
    chunks, vectors = corpus(200)
    store = FaissStore.create(tmp_path / "s", DIMENSION, index="hnsw")
    store.upsert(chunks, vectors)
    monkeypatch.setattr(faiss_store, "EXACT_FILTER_LIMIT", 0)
    monkeypatch.setattr(FaissStore, "_search_index", lambda self, query, k, params: [])
    hits = store.search(vectors[3], top_k=4, filters={"bucket": 3})
    assert [h.chunk.id for h in hits][0] == "d3#0" and len(hits) == 4
    assert all(h.chunk.metadata["bucket"] == 3 for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_changed_graph_options_rebuild_at_flush(tmp_path):
    chunks, vectors = corpus(100)
    store = FaissStore.create(tmp_path / "s", DIMENSION, index="hnsw", hnsw_m=8)
    store.upsert(chunks, vectors)
    store.flush()
    assert faiss.downcast_index(written(tmp_path / "s")[0].index).hnsw.nb_neighbors(1) == 8
    store = FaissStore.open(tmp_path / "s", index="hnsw", hnsw_m=16)
    store.flush()
    assert faiss.downcast_index(written(tmp_path / "s")[0].index).hnsw.nb_neighbors(1) == 16


def test_hnsw_keeps_float16_vectors_and_converts_either_way_at_flush(tmp_path):
    chunks, vectors = corpus(300)
    store = FaissStore.create(tmp_path / "s", DIMENSION, index="hnsw")
    store.upsert(chunks, vectors)
    store.flush()
    assert isinstance(faiss.downcast_index(written(tmp_path / "s")[0].index), faiss.IndexHNSWSQ)
    exact = vectors @ vectors[7]
    hits = store.search(vectors[7], top_k=5)
    assert [h.chunk.doc_id for h in hits] == [f"d{i}" for i in np.argsort(-exact)[:5]]
    assert all(abs(h.score - exact[int(h.chunk.doc_id[1:])]) < 1e-3 for h in hits)
    again = store.vectors([c.id for c in chunks])  # what a rebuild or a carried-over version reuses
    assert np.abs(again - vectors).max() < 1e-3
    assert np.array_equal(again.astype(np.float16).astype(np.float32), again)  # no drift on the next round trip
    store = FaissStore.open(tmp_path / "s", index="hnsw", hnsw_vectors="fp32")  # a store written before fp16
    assert store.mode == "hnsw"
    store.flush()
    assert isinstance(faiss.downcast_index(written(tmp_path / "s")[0].index), faiss.IndexHNSWFlat)
    store = FaissStore.open(tmp_path / "s", index="hnsw")
    assert store.mode == "hnsw" and store.search(vectors[7], top_k=1)[0].chunk.doc_id == "d7"
    store.flush()
    assert isinstance(faiss.downcast_index(written(tmp_path / "s")[0].index), faiss.IndexHNSWSQ)
    with pytest.raises(StoreError, match="vector type"):
        FaissStore.open(tmp_path / "s", hnsw_vectors="int4")


def test_an_explicit_index_kind_converts_at_flush(tmp_path):
    chunks, vectors = corpus(100)
    store = FaissStore.create(tmp_path / "s", DIMENSION, index="hnsw")
    store.upsert(chunks, vectors)
    store.flush()
    store = FaissStore.open(tmp_path / "s", index="flat")
    assert store.mode == "hnsw"
    store.flush()
    assert store.mode == "flat" and FaissStore.open(tmp_path / "s").mode == "flat"
    assert store.search(vectors[5], top_k=1)[0].chunk.id == "d5#0"


def test_unknown_index_kind_and_inconsistent_meta(tmp_path):
    with pytest.raises(StoreError, match="unknown FAISS index kind"):
        FaissStore.create(tmp_path / "s", DIMENSION, index="ivf")
    store = FaissStore.create(tmp_path / "s", DIMENSION)
    store.flush()
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    (tmp_path / "s" / "meta.json").write_text(json.dumps({**meta, "mode": "hnsw"}))
    with pytest.raises(StoreError, match="corrupt"):
        FaissStore.open(tmp_path / "s")


class _TeamSizeSpy:
    """Wraps a FAISS index and records the OpenMP team size each search and gather ran with."""

    def __init__(self, index):
        self._index, self.seen = index, []

    def search(self, *args, **kwargs):
        self.seen.append(faiss.omp_get_max_threads())
        return self._index.search(*args, **kwargs)

    def reconstruct_batch(self, ids):
        self.seen.append(faiss.omp_get_max_threads())
        return self._index.reconstruct_batch(ids)

    def __getattr__(self, name):
        return getattr(self._index, name)


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_search_runs_single_threaded_and_leaves_the_thread_as_it_was(tmp_path, index):
    # The API server searches from worker threads while the engine holds the other cores; a
    # team of every core waits at FAISS's barriers for them (see faiss_store.SEARCH_THREADS).
    chunks, vectors = corpus(200)
    store = FaissStore.create(tmp_path / "s", DIMENSION, index=index)
    store.upsert(chunks, vectors)
    store.flush()
    store._index = spy = _TeamSizeSpy(store._index)
    original = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(3)
    try:
        assert store.search(vectors[0], top_k=3)[0].chunk.doc_id == "d0"
        assert store.search(vectors[1], top_k=3, filters={"bucket": 1})[0].chunk.doc_id == "d1"  # exact path (HNSW)
        assert faiss.omp_get_max_threads() == 3  # a build later on this thread keeps its cores
    finally:
        faiss.omp_set_num_threads(original)
    assert spy.seen and set(spy.seen) == {faiss_store.SEARCH_THREADS}
