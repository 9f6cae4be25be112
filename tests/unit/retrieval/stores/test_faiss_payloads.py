"""The FAISS store's payload table (chunks.sqlite): payloads and exact vectors on disk, filters
decided as `base.matches` decides them, writes through a scratch copy that `flush()` publishes."""

import faiss
import numpy as np
import pytest

from retro_vllm.retrieval.stores import faiss_payloads
from retro_vllm.retrieval.stores.base import StoreError, matches
from retro_vllm.retrieval.stores.faiss import FaissStore
from retro_vllm.retrieval.types import Chunk

from .faiss_corpus import DIMENSION, corpus, files, flushed, rich_corpus


def test_payloads_are_on_disk_and_come_back_whole(tmp_path):
    chunks, vectors = rich_corpus(60)
    store = flushed(tmp_path / "s", chunks, vectors, index="flat")
    store.close()
    assert set(files(tmp_path / "s")) == {"index.faiss", "chunks.sqlite", "meta.json"}
    store = FaissStore.open(tmp_path / "s")
    # nothing held per chunk: no attribute is a container the size of the corpus
    assert not [k for k, v in vars(store).items() if hasattr(v, "__len__") and len(v) >= len(chunks)]
    for i in (0, 13, 59):
        hit = store.search(vectors[i], top_k=1)[0]
        assert hit.chunk == chunks[i] and hit.score == pytest.approx(1.0, abs=1e-5)
    assert sorted(store.chunks(), key=lambda c: c.id) == sorted(chunks, key=lambda c: c.id)


FILTERS = [
    {"domain": "a"}, {"domain": ["a", "c"]}, {"domain": []}, {"domain": 5}, {"domain": ["a", 5]},
    {"tenant": None}, {"tenant": "t1"}, {"tenant": [None, "t2"]}, {"tenant": "none"},
    {"doc_id": "d3"}, {"id": ["d3#1", "d4#0", "nope"]}, {"doc_id": "d3", "bucket": 6},
    {"lang": None}, {"lang": "fr"}, {"lang": ["en", None]}, {"bucket": 3}, {"bucket": [3.0, 4]},
    {"flag": True}, {"flag": 1}, {"tag": ""}, {"extra": [1, 2]}, {"missing": None}, {"missing": "x"},
    {"domain": "b", "tenant": None, "lang": "en"}, {"domain": ["a", "b"], "tenant": ["t1", "t2"], "bucket": [1, 2, 3]},
]


@pytest.mark.parametrize("reopen", [False, True])
def test_filters_decide_as_matches_does(tmp_path, reopen, monkeypatch):
    monkeypatch.setattr(faiss_payloads, "VERDICT_MEMO_SIZE", 3)  # the memo is cleared on the way
    chunks, vectors = rich_corpus(90)
    store = FaissStore.create(tmp_path / "s", DIMENSION, index="flat")
    store.upsert(chunks, vectors)
    if reopen:
        store.flush()
        store = FaissStore.open(tmp_path / "s")
    for filters in FILTERS:
        expected = sorted(c.id for c in chunks if matches(c, filters))
        assert store.count(filters) == len(expected), filters
        assert sorted(c.id for c in store.chunks(filters)) == expected, filters
        got = store.search(vectors[0], top_k=100, filters=filters)
        assert sorted(h.chunk.id for h in got) == expected, filters


@pytest.mark.parametrize("failing", ["index", "payloads"])
def test_a_failed_flush_leaves_the_last_flushed_folder(tmp_path, monkeypatch, failing):
    chunks, vectors = rich_corpus(30)
    store = flushed(tmp_path / "s", chunks[:20], vectors[:20], index="hnsw")
    before = files(tmp_path / "s")
    store.upsert(chunks[20:], vectors[20:])
    store.delete(doc_ids=["d0", "d1"])
    assert files(tmp_path / "s").keys() - before.keys() == {"chunks.sqlite.tmp"}  # writes go to scratch
    assert {k: v for k, v in files(tmp_path / "s").items() if k in before} == before

    def boom(*_args):
        raise OSError("disk full")

    if failing == "index":
        monkeypatch.setattr(faiss, "write_index", boom)
    else:
        monkeypatch.setattr(faiss_payloads.Payloads, "compact", boom)
    with pytest.raises(OSError, match="disk full"):
        store.flush()
    assert {k: v for k, v in files(tmp_path / "s").items() if k in before} == before
    reader = FaissStore.open(tmp_path / "s", index="hnsw")
    assert reader.count() == 20 and reader.search(vectors[0], top_k=1)[0].chunk == chunks[0]

    monkeypatch.undo()  # the writer still holds its changes and can flush them
    assert store.count() == 26 and store.search(vectors[25], top_k=1)[0].chunk == chunks[25]
    store.flush()
    assert "chunks.sqlite.tmp" not in files(tmp_path / "s")
    assert FaissStore.open(tmp_path / "s", index="hnsw").count() == 26
    assert reader.count() == 20  # a reader keeps the version it opened


def test_closing_without_flush_drops_the_scratch_file(tmp_path):
    chunks, vectors = rich_corpus(10)
    store = flushed(tmp_path / "s", chunks, vectors)
    before = files(tmp_path / "s")
    writer = FaissStore.open(tmp_path / "s")
    writer.upsert(chunks[:1], vectors[1:2])
    writer.close()
    assert files(tmp_path / "s") == before
    with pytest.raises(StoreError, match="closed"):
        writer.search(vectors[0], top_k=1)


def test_reupsert_and_delete_survive_flush_and_free_their_space(tmp_path):
    chunks, vectors = rich_corpus(400)
    store = flushed(tmp_path / "s", chunks, vectors, index="hnsw")
    size = (tmp_path / "s" / "chunks.sqlite").stat().st_size
    replaced = Chunk(id="d7#1", doc_id="d7", text="new text", domain="z", metadata={"v": 2})
    store.upsert([replaced], vectors[:1])
    assert store.delete(doc_ids=[f"d{i}" for i in range(8, 200)]) == 384
    store.flush()
    store = FaissStore.open(tmp_path / "s", index="hnsw")
    assert store.count() == 16 and store.count({"domain": "z"}) == 1
    assert store.search(vectors[0], top_k=2)[0].chunk in (replaced, chunks[0])
    assert [c for c in store.chunks({"id": "d7#1"})] == [replaced]
    assert np.abs(store.vectors(["d7#1"]) - vectors[:1]).max() < 1e-3
    assert (tmp_path / "s" / "chunks.sqlite").stat().st_size < size / 2  # free pages dropped


def test_concurrent_searches_get_their_own_chunks(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    chunks, vectors = rich_corpus(500)
    store = flushed(tmp_path / "s", chunks, vectors, index="flat")
    store = FaissStore.open(tmp_path / "s")

    def search(i):
        hits = store.search(vectors[i], top_k=3, filters={"domain": chunks[i].domain} if i % 2 else None)
        return hits[0].chunk == chunks[i] and len(hits) == 3

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(search, [i % 500 for i in range(4000)]))


def test_a_reader_keeps_serving_after_its_folder_is_removed(tmp_path):
    # The index layer prunes old versions while a server may still search one.
    import shutil

    chunks, vectors = rich_corpus(50)
    store = flushed(tmp_path / "s", chunks, vectors, index="flat")
    reader = FaissStore.open(tmp_path / "s")
    shutil.rmtree(tmp_path / "s")
    assert reader.search(vectors[9], top_k=1)[0].chunk == chunks[9]
    assert reader.count({"bucket": 2}) == sum(c.metadata["bucket"] == 2 for c in chunks)


def test_missing_corrupt_or_mismatched_payloads_are_store_errors(tmp_path):
    chunks, vectors = rich_corpus(10)
    for name, n in (("s", 10), ("other", 9)):
        store = flushed(tmp_path / name, chunks[:n], vectors[:n])
        store.close()
    (tmp_path / "s" / "chunks.sqlite").replace(tmp_path / "kept")
    with pytest.raises(StoreError, match="chunks.sqlite is missing"):
        FaissStore.open(tmp_path / "s")
    (tmp_path / "other" / "chunks.sqlite").replace(tmp_path / "s" / "chunks.sqlite")
    with pytest.raises(StoreError, match="holds 10 vectors for 9 chunks"):
        FaissStore.open(tmp_path / "s")
    (tmp_path / "s" / "chunks.sqlite").write_bytes((tmp_path / "kept").read_bytes()[:5000])
    with pytest.raises(StoreError, match="corrupt"):
        FaissStore.open(tmp_path / "s")
    (tmp_path / "s" / "chunks.sqlite").unlink()
    (tmp_path / "s" / "chunks.jsonl").write_text('{"int_id": 0, "id": "x"}\n')
    with pytest.raises(StoreError, match="corrupt"):
        FaissStore.open(tmp_path / "s")


def test_chunks_with_untyped_filter_fields_are_refused_before_any_change(tmp_path):
    chunks, vectors = rich_corpus(3)
    store = FaissStore.create(tmp_path / "s", DIMENSION)
    store.upsert(chunks[:1], vectors[:1])
    bad = Chunk(id="b#0", doc_id="b", text="", domain=5)
    with pytest.raises(StoreError, match="must be strings"):
        store.upsert([chunks[1], bad], vectors[1:3])
    assert store.count() == 1 and store.mode == "flat" and store._index.ntotal == 1


def test_a_payload_file_without_vectors_is_refused_at_open(tmp_path):
    import sqlite3

    chunks, vectors = corpus(10)
    store = flushed(tmp_path / "s", chunks, vectors, index="flat")
    store.close()
    with sqlite3.connect(tmp_path / "s" / "chunks.sqlite") as connection:
        connection.execute("DROP TABLE vectors")
    with pytest.raises(StoreError, match="lacks the tables chunks and vectors"):
        FaissStore.open(tmp_path / "s")
