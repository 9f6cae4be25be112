"""The behaviour every store owes `base.VectorStore` (and an embedded one `base.EmbeddedStore`):
one suite, run on every backend (listed, with what each needs, in conftest.py). A server
backend without its URL is skipped with that reason."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from retro_vllm.retrieval.stores.base import EmbeddedStore, StoreError, VectorStore, matches
from retro_vllm.retrieval.stores.embedded import copy_folder
from retro_vllm.retrieval.types import Chunk


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def chunk(doc, n=0, domain="a", tenant=None, text=None, **meta):
    return Chunk(id=f"{doc}#{n}", doc_id=doc, text=text or f"{doc} {n}", domain=domain, title=doc, tenant=tenant,
                 metadata=meta)


CHUNKS = [
    chunk("x", domain="a", tenant="acme", lang="en", year=2020, draft=False, **{"a.b": 1}),
    chunk("y", domain="b", lang="fr", year=2021, draft=True),
    chunk("z", domain="a", tenant="acme", lang="fr", year=2020.5, draft=False),
]


def filled(make):
    store = make()
    store.upsert(CHUNKS, unit([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0]]))
    return store


@pytest.fixture
def store(make):
    return filled(make)


def ids(hits):
    return [h.chunk.id for h in hits]


# -- every store ------------------------------------------------------------------------------
def test_satisfies_the_protocol(store):
    assert isinstance(store, VectorStore)
    store.health()


def test_search_orders_by_cosine_and_reads_chunks_back(store, make):
    hits = store.search(unit([1, 0, 0]), top_k=3)
    assert ids(hits) == ["x#0", "y#0", "z#0"]
    assert [h.score for h in hits] == pytest.approx([1.0, float(unit([0.9, 0.1, 0])[0]), 0.0],
                                                    abs=make.case.score_tolerance)
    assert all(h.stage == "dense" and h.scores == {"dense": h.score} for h in hits)
    assert [h.chunk for h in hits] == CHUNKS
    assert ids(store.search(unit([1, 0, 0]), top_k=1)) == ["x#0"]


@pytest.mark.parametrize(
    "filters, expected",
    [
        ({"domain": "a"}, ["x#0", "z#0"]),
        ({"tenant": "acme"}, ["x#0", "z#0"]),
        ({"tenant": None}, ["y#0"]),
        ({"doc_id": "y"}, ["y#0"]),
        ({"id": "z#0"}, ["z#0"]),
        ({"lang": "fr"}, ["y#0", "z#0"]),
        ({"lang": ["en", "de"]}, ["x#0"]),
        ({"doc_id": ["x", "z"]}, ["x#0", "z#0"]),
        ({"year": 2020}, ["x#0"]),
        ({"year": [2020.5, 2021]}, ["y#0", "z#0"]),
        ({"draft": True}, ["y#0"]),
        ({"a.b": 1}, ["x#0"]),
        ({"missing": None}, ["x#0", "y#0", "z#0"]),
        ({"missing": "red"}, []),
        ({"domain": "a", "lang": "fr"}, ["z#0"]),
        ({"domain": ["a", "b"], "tenant": "acme", "lang": ["en", "fr"]}, ["x#0", "z#0"]),
        ({"domain": "none"}, []),
        ({"lang": []}, []),
    ],
)
def test_filters(store, filters, expected):
    assert ids(store.search(unit([1, 0, 0]), top_k=3, filters=filters)) == expected
    assert store.count(filters) == len(expected)
    assert sorted(c.id for c in store.chunks(filters)) == sorted(expected)


def test_delete_removes_documents(store):
    assert store.delete(doc_ids=["x", "missing"]) == 1
    assert store.count() == 2
    assert ids(store.search(unit([1, 0, 0]), top_k=5)) == ["y#0", "z#0"]
    assert ids(store.search(unit([1, 0, 0]), top_k=5, filters={"domain": "a"})) == ["z#0"]
    assert store.delete(doc_ids=[]) == 0
    with pytest.raises(StoreError, match="x#0"):
        store.vectors(["x#0"])


def test_reupsert_replaces(store):
    store.upsert([chunk("z", domain="b", lang="de")], unit([[1, 0, 0]]))
    assert store.count() == 3
    hits = store.search(unit([1, 0, 0]), top_k=10)
    assert sorted(ids(hits)) == ["x#0", "y#0", "z#0"]
    replaced = next(h for h in hits if h.chunk.id == "z#0")
    assert replaced.score == pytest.approx(1.0, abs=1e-5)
    assert replaced.chunk.domain == "b" and replaced.chunk.metadata == {"lang": "de"}
    assert store.count({"domain": "a"}) == 1


def test_a_batch_naming_a_chunk_twice_keeps_the_last(make):
    store = make()
    store.upsert([chunk("x", v=1), chunk("x", v=2)], unit([[1, 0, 0], [0, 1, 0]]))
    assert store.count() == 1
    assert [c.metadata for c in store.chunks()] == [{"v": 2}]
    assert store.vectors(["x#0"]) == pytest.approx(unit([[0, 1, 0]]), abs=1e-6)


def test_empty_store(make):
    store = make()
    assert store.search(unit([1, 0, 0]), top_k=5) == []
    assert store.search(unit([1, 0, 0]), top_k=5, filters={"domain": "a"}) == []
    assert store.count() == 0 and store.count({"domain": "a"}) == 0
    assert list(store.chunks()) == []
    assert store.vectors([]).shape == (0, 3)
    store.upsert([], np.zeros((0, 3), np.float32))
    assert store.count() == 0


def test_dimension_mismatch_changes_nothing(store):
    with pytest.raises(StoreError, match="dimension 4 does not match the store's 3"):
        store.upsert([chunk("w")], unit([[1, 0, 0, 0]]))
    with pytest.raises(StoreError, match="2 chunks but 1 vectors"):
        store.upsert([chunk("w"), chunk("v")], unit([[1, 0, 0]]))
    with pytest.raises(StoreError, match="dimension"):
        store.search(unit([1, 0]), top_k=1)
    assert store.count() == 3
    assert ids(store.search(unit([1, 0, 0]), top_k=5)) == ["x#0", "y#0", "z#0"]


def test_vectors_by_id(store):
    assert store.vectors(["z#0", "x#0"]) == pytest.approx(unit([[0, 1, 0], [1, 0, 0]]), abs=1e-6)
    with pytest.raises(StoreError, match="nope#0"):
        store.vectors(["x#0", "nope#0"])


def test_close_is_idempotent(store):
    store.close()
    store.close()


def brute_force(vectors, chunks, query, top_k, filters):
    scores = vectors @ query
    order = [i for i in np.argsort(-scores) if matches(chunks[i], filters)]
    return [chunks[i].id for i in order[:top_k]]


def test_many_points_match_brute_force(make):
    rng = np.random.default_rng(7)
    n, dimension = 2000, 32
    vectors = unit(rng.normal(size=(n, dimension)))
    chunks = [chunk(f"d{i}", domain="ab"[i % 2], bucket=int(i % 50), tag=f"t{i % 7}") for i in range(n)]
    store = make(dimension)
    store.upsert(chunks, vectors)
    store.delete(doc_ids=[f"d{i}" for i in range(0, n, 10)])
    live = [i for i in range(n) if i % 10]
    if isinstance(store, EmbeddedStore):
        store.flush()  # what an embedded store is searched as once published
    vectors, chunks = vectors[live], [chunks[i] for i in live]
    overlaps = []
    for filters in [None, {"domain": "a"}, {"tag": ["t1", "t2"]}, {"bucket": 3}, {"domain": "b", "bucket": [5, 7]}]:
        query = unit(rng.normal(size=dimension))
        expected = brute_force(vectors, chunks, query, 10, filters)
        got = ids(store.search(query, top_k=10, filters=filters))
        assert len(got) == len(expected) == 10
        if make.case.exact:
            assert got == expected
        overlaps.append(len(set(got) & set(expected)) / len(expected))
    assert np.mean(overlaps) >= 0.9


# -- stores that rank by words themselves (base.KeywordSearchable) ------------------------------
def test_keyword_search(make_keyword_searchable):
    store = make_keyword_searchable()
    words = [chunk(doc, domain=domain, text=f"{doc} is a document about {domain}", **meta)
             for doc, domain, meta in [("x", "geo", {"lang": "en"}), ("y", "law", {"lang": "fr"}),
                                       ("z", "geo", {"lang": "fr"})]]
    store.upsert(words, unit([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0]]))
    hits = store.keyword_search("law", top_k=5)
    assert ids(hits) == ["y#0"] and hits[0].stage == "bm25" and hits[0].scores == {"bm25": hits[0].score}
    assert hits[0].score > 0 and hits[0].chunk == words[1]
    assert ids(store.keyword_search("document", top_k=5, filters={"lang": "fr"}))[0] in ("y#0", "z#0")
    assert store.keyword_search("law", top_k=5, filters={"domain": "geo"}) == []


# -- server stores ----------------------------------------------------------------------------
def test_a_collection_of_another_dimension_is_refused(make_server):
    first = make_server(3)
    first.upsert(CHUNKS[:1], unit([[1, 0, 0]]))
    first.close()  # qdrant-client's local mode lets one client at a time open its folder
    with pytest.raises(StoreError, match="dimension 3, the embedder makes 4"):
        make_server(4)


# -- embedded stores (base.EmbeddedStore: one folder) ------------------------------------------
@pytest.fixture
def embedded(make_embedded):
    return filled(make_embedded)


def test_embedded_store_satisfies_its_protocol(embedded):
    assert isinstance(embedded, EmbeddedStore)


def test_flushed_folder_copies_as_the_same_store(embedded, make_embedded, tmp_path):
    embedded.flush()
    shutil.copytree(tmp_path / "store", tmp_path / "copy")
    copy = make_embedded.open("copy")
    query = unit([0.8, 0.3, 0.1])
    assert ids(copy.search(query, top_k=3)) == ids(embedded.search(query, top_k=3))
    assert sorted(c.id for c in copy.chunks({"lang": "fr"})) == ["y#0", "z#0"]
    copy.upsert([chunk("w", domain="c")], unit([[0, 0, 1]]))
    copy.delete(doc_ids=["x"])
    copy.flush()
    assert embedded.count() == 3 and make_embedded.open("store").count() == 3
    assert make_embedded.open("copy").count({"domain": "c"}) == 1


def test_opening_a_flushed_folder_changes_no_bytes(embedded, make_embedded, tmp_path):
    embedded.delete(doc_ids=["y"])
    embedded.flush()

    def contents():
        return {p: p.read_bytes() for p in (tmp_path / "store").rglob("*") if p.is_file()}

    before = contents()
    reader = make_embedded.open("store")
    reader.search(unit([1, 0, 0]), top_k=2)
    reader.close()
    assert contents() == before


def test_copy_folder_keeps_the_store_small(embedded, make_embedded, tmp_path):
    embedded.flush()
    copy_folder(tmp_path / "store", tmp_path / "copy")
    used = sum(p.stat().st_blocks * 512 for p in (tmp_path / "copy").rglob("*") if p.is_file())
    assert used < 4 << 20
    assert make_embedded.open("copy").count() == 3


def test_missing_or_foreign_folder_is_a_store_error(make_embedded, tmp_path):
    with pytest.raises(StoreError, match="missing"):
        make_embedded.open("nowhere")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "meta.json").write_text('{"backend": "elsewhere"}')
    with pytest.raises(StoreError, match="does not hold"):
        make_embedded.open("other")


def test_corrupt_folder_is_a_store_error(embedded, make_embedded, tmp_path):
    embedded.flush()
    embedded.close()
    folder = tmp_path / "store"
    for path in folder.rglob("*"):
        if path.is_file() and path.name != "meta.json" and path.stat().st_size:
            path.write_bytes(b"garbage")
    with pytest.raises(StoreError, match="corrupt"):
        make_embedded.open("store")


def test_create_refuses_an_existing_store(embedded, make_embedded):
    embedded.flush()
    with pytest.raises(StoreError, match="already holds"):
        make_embedded()
