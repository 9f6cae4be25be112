"""What only the FAISS store does: choosing flat or HNSW, keeping an HNSW graph exact under
deletes, searching on one thread. The behaviour every store shares is in
tests/contract/test_store_contract.py; the payload table in test_faiss_payloads.py."""

import json

import faiss
import numpy as np
import pytest

from retro_vllm.retrieval.stores import faiss as faiss_store
from retro_vllm.retrieval.stores.base import StoreError, matches
from retro_vllm.retrieval.stores.faiss import FaissStore
from retro_vllm.retrieval.types import Chunk

from .faiss_corpus import DIMENSION, corpus, flushed, graph_vectors, unit, written


def test_auto_picks_hnsw_at_the_threshold_when_flushing(tmp_path):
    chunks, vectors = corpus(60)
    store = flushed(tmp_path / "s", chunks[:49], vectors[:49], hnsw_above=50)
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
    store = flushed(tmp_path / "s", chunks, vectors, index="hnsw")
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
        allowed = [i for i, c in enumerate(chunks) if matches(c, filters)]
        expected = {chunks[i].id for i in sorted(allowed, key=lambda i: -float(vectors[i] @ query))[:10]}
        got = {h.chunk.id for h in store.search(query, top_k=10, filters=filters)}
        assert len(got) == 10 and len(got & expected) >= 9


def test_a_short_graph_walk_falls_back_to_exact_scoring(tmp_path, monkeypatch):
    chunks, vectors = corpus(200)
    store = FaissStore.create(tmp_path / "s", DIMENSION, index="hnsw")
    store.upsert(chunks, vectors)
    store.flush()  # the graph is built here
    monkeypatch.setattr(faiss_store, "EXACT_FILTER_LIMIT", 0)
    monkeypatch.setattr(FaissStore, "_search_index", lambda self, query, k, params, candidates=None: [])
    hits = store.search(vectors[3], top_k=4, filters={"bucket": 3})
    assert [h.chunk.id for h in hits][0] == "d3#0" and len(hits) == 4
    assert all(h.chunk.metadata["bucket"] == 3 for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def graph_beam_and_degree(folder) -> tuple[int, int]:
    outer = written(folder)[0]  # held: the inner index lives only as long as its owner
    graph = faiss.downcast_index(outer.index).hnsw
    return graph.efConstruction, graph.nb_neighbors(1)


def test_changed_graph_options_rebuild_at_flush(tmp_path):
    chunks, vectors = corpus(100)
    flushed(tmp_path / "s", chunks, vectors, index="hnsw", hnsw_m=8)
    assert graph_beam_and_degree(tmp_path / "s")[1] == 8
    FaissStore.open(tmp_path / "s", index="hnsw", hnsw_m=16).flush()
    assert graph_beam_and_degree(tmp_path / "s")[1] == 16


def test_a_graph_built_with_a_wider_beam_is_kept_a_narrower_one_rebuilt(tmp_path):
    chunks, vectors = corpus(100)
    flushed(tmp_path / "s", chunks, vectors, index="hnsw", ef_construction=200)
    FaissStore.open(tmp_path / "s", index="hnsw", ef_construction=100).flush()
    assert graph_beam_and_degree(tmp_path / "s")[0] == 200  # the better graph stays
    FaissStore.open(tmp_path / "s", index="hnsw", ef_construction=300).flush()
    assert graph_beam_and_degree(tmp_path / "s")[0] == 300


def test_hnsw_walks_8_bit_codes_and_ranks_by_exact_vectors_and_converts_at_flush(tmp_path):
    chunks, vectors = corpus(300)
    store = flushed(tmp_path / "s", chunks, vectors, index="hnsw")
    assert graph_vectors(tmp_path / "s") == "sq8"
    exact = vectors @ vectors[7]
    hits = store.search(vectors[7], top_k=5)
    assert [h.chunk.doc_id for h in hits] == [f"d{i}" for i in np.argsort(-exact)[:5]]
    # ranked by the exact float32 vectors from chunks.sqlite, not by the codes
    assert all(abs(h.score - exact[int(h.chunk.doc_id[1:])]) < 1e-5 for h in hits)
    assert np.array_equal(store.vectors([c.id for c in chunks]), vectors)  # what rebuilds and copies reuse
    store = FaissStore.open(tmp_path / "s", index="hnsw", hnsw_vectors="fp16")
    assert store.search(vectors[7], top_k=1)[0].chunk.doc_id == "d7"
    store.flush()
    assert graph_vectors(tmp_path / "s") == "fp16"
    hits = FaissStore.open(tmp_path / "s", index="hnsw", hnsw_vectors="fp16").search(vectors[7], top_k=5)
    assert all(abs(h.score - exact[int(h.chunk.doc_id[1:])]) < 1e-3 for h in hits)  # float16 scores
    store = FaissStore.open(tmp_path / "s", index="hnsw", hnsw_vectors="fp32")
    store.flush()
    assert graph_vectors(tmp_path / "s") == "fp32"
    store = FaissStore.open(tmp_path / "s", index="hnsw")
    store.flush()
    assert graph_vectors(tmp_path / "s") == "sq8"
    assert np.array_equal(FaissStore.open(tmp_path / "s").vectors([c.id for c in chunks]), vectors)  # no drift
    with pytest.raises(StoreError, match="vector type"):
        FaissStore.open(tmp_path / "s", hnsw_vectors="int4")


def test_an_8_bit_graph_keeps_exact_search_recall(tmp_path):
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(40, DIMENSION))
    vectors = unit(centres[rng.integers(0, 40, 4000)] + 0.6 * rng.normal(size=(4000, DIMENSION)))
    queries = unit(centres[rng.integers(0, 40, 100)] + 0.6 * rng.normal(size=(100, DIMENSION)))
    chunks = [Chunk(id=f"d{i}#0", doc_id=f"d{i}", text="", domain="a") for i in range(4000)]
    store = flushed(tmp_path / "s", chunks, vectors, index="hnsw")
    assert graph_vectors(tmp_path / "s") == "sq8"
    found = 0
    for query in queries:
        truth = {f"d{i}" for i in np.argsort(-(vectors @ query))[:10]}
        found += len(truth & {h.chunk.doc_id for h in store.search(query, top_k=10)})
    assert found / 1000 >= 0.99


def test_an_explicit_index_kind_converts_at_flush(tmp_path):
    chunks, vectors = corpus(100)
    store = flushed(tmp_path / "s", chunks, vectors, index="hnsw")
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
    store = flushed(tmp_path / "s", chunks, vectors, index=index)
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


def test_walking_the_chunks_reads_a_page_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setattr(faiss_store, "CHUNK_PAGE", 2)
    chunks = [Chunk(id=f"d{i}#0", doc_id=f"d{i}", text=f"text {i}", domain="ab"[i % 2]) for i in range(5)]
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((5, 4)).astype(np.float32)
    store = FaissStore.create(tmp_path / "s", 4)
    store.upsert(chunks, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    store.flush()
    pages = []
    real_page = store._payloads.chunk_page
    monkeypatch.setattr(store._payloads, "chunk_page", lambda *a, **k: pages.append(1) or real_page(*a, **k))
    walk = store.chunks()
    assert next(walk).id == "d0#0" and len(pages) == 1  # lazily: one page read so far
    assert [c.id for c in walk] == ["d1#0", "d2#0", "d3#0", "d4#0"] and len(pages) == 4  # 2 + 2 + 1, then empty
    assert [c.id for c in store.chunks({"domain": "b"})] == ["d1#0", "d3#0"]
    assert [c.id for c in store.chunks({"domain": "c"})] == []


def test_a_filtered_8_bit_walk_far_from_the_allowed_chunks_still_returns_them(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    centre_a, centre_b = unit(rng.normal(size=(2, DIMENSION)))
    vectors = unit(np.vstack([centre_a + 0.2 * rng.normal(size=(1950, DIMENSION)),
                              centre_b + 0.2 * rng.normal(size=(50, DIMENSION))]))
    chunks = [Chunk(id=f"d{i}#0", doc_id=f"d{i}", text="", domain="a" if i < 1950 else "b") for i in range(2000)]
    store = flushed(tmp_path / "s", chunks, vectors, index="hnsw")
    assert graph_vectors(tmp_path / "s") == "sq8"
    monkeypatch.setattr(faiss_store, "EXACT_FILTER_LIMIT", 0)  # the 50 allowed chunks go through the walk
    assert store._payloads.rerank(vectors[0], [], 5) == []  # a walk that met no allowed node
    hits = store.search(centre_a, top_k=5, filters={"domain": "b"})
    best_b = np.argsort(-(vectors[1950:] @ centre_a))[:5] + 1950
    assert [h.chunk.id for h in hits] == [f"d{i}#0" for i in best_b]


def test_an_8_bit_graph_is_retrained_once_the_store_has_doubled(tmp_path):
    chunks, vectors = corpus(700)
    store = flushed(tmp_path / "s", chunks[:300], vectors[:300], index="hnsw")
    assert written(tmp_path / "s")[1]["trained_on"] == 300
    store = FaissStore.open(tmp_path / "s", index="hnsw")
    store.upsert(chunks[300:500], vectors[300:500])
    store.flush()
    assert written(tmp_path / "s")[1]["trained_on"] == 300  # 500 < 2 x 300: new vectors go into the graph
    store = FaissStore.open(tmp_path / "s", index="hnsw")
    store.upsert(chunks[500:], vectors[500:])
    store.flush()
    assert written(tmp_path / "s")[1]["trained_on"] == 700
    assert FaissStore.open(tmp_path / "s", index="hnsw").search(vectors[650], top_k=1)[0].chunk.id == "d650#0"


def test_a_failed_upsert_loses_nothing(tmp_path, monkeypatch):
    chunks, vectors = corpus(20)
    store = FaissStore.create(tmp_path / "s", DIMENSION, index="flat")
    store.upsert(chunks, vectors)

    def refuse(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(store._index, "add_with_ids", refuse)
    with pytest.raises(RuntimeError):
        store.upsert([chunks[3]], vectors[4:5])  # a re-upsert: the old vector must survive
    store.health()
    assert store.count() == 20 and store.search(vectors[3], top_k=1)[0].chunk.id == "d3#0"
