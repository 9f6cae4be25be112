"""The behaviour every embedded store owes `base.EmbeddedStore`, run on each backend."""

import shutil

import numpy as np
import pytest

from retro_vllm.retrieval.stores import embedded_store_class
from retro_vllm.retrieval.stores.base import EmbeddedStore, StoreError, matches
from retro_vllm.retrieval.stores.embedded import copy_folder
from retro_vllm.retrieval.types import Chunk

BACKENDS = {
    "faiss-flat": ("faiss", {"index": "flat"}),
    "faiss-hnsw": ("faiss", {"index": "hnsw"}),  # 8-bit codes once flushed, flat before
    "faiss-hnsw-fp16": ("faiss", {"index": "hnsw", "hnsw_vectors": "fp16"}),
    "qdrant-edge": ("qdrant-edge", {}),
}
EXACT = {"faiss-flat", "qdrant-edge"}
# Score tolerance: a FAISS HNSW graph of float16 vectors (hnsw_vectors fp16) scores with them:
# half a float16 step near 1.0. An 8-bit graph ranks by exact vectors.
SCORE_TOLERANCE = {"faiss-hnsw-fp16": 5e-4}


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def chunk(doc, n=0, domain="a", tenant=None, **meta):
    return Chunk(id=f"{doc}#{n}", doc_id=doc, text=f"{doc} {n}", domain=domain, title=doc, tenant=tenant, metadata=meta)


@pytest.fixture(params=list(BACKENDS))
def backend(request):
    return request.param


@pytest.fixture
def make(backend, tmp_path):
    name, options = BACKENDS[backend]
    cls = embedded_store_class(name)
    opened = []

    def create(dimension=3, folder="store"):
        store = cls.create(tmp_path / folder, dimension, **options)
        opened.append(store)
        return store

    def reopen(folder):
        store = cls.open(tmp_path / folder, **options)
        opened.append(store)
        return store

    create.open = reopen
    create.cls = cls
    yield create
    for store in opened:
        store.close()


@pytest.fixture
def store(make):
    s = make()
    s.upsert(
        [
            chunk("x", domain="a", tenant="acme", lang="en", year=2020, draft=False),
            chunk("y", domain="b", lang="fr", year=2021, draft=True),
            chunk("z", domain="a", tenant="acme", lang="fr", year=2020.5, draft=False),
        ],
        unit([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0]]),
    )
    return s


def ids(hits):
    return [h.chunk.id for h in hits]


def test_satisfies_the_protocol(store):
    assert isinstance(store, EmbeddedStore)
    store.health()


def test_search_orders_by_cosine(store, backend):
    hits = store.search(unit([1, 0, 0]), top_k=3)
    assert ids(hits) == ["x#0", "y#0", "z#0"]
    assert [h.score for h in hits] == pytest.approx([1.0, float(unit([0.9, 0.1, 0])[0]), 0.0],
                                                    abs=SCORE_TOLERANCE.get(backend, 1e-5))
    assert all(h.stage == "dense" and h.scores == {"dense": h.score} for h in hits)
    assert hits[0].chunk == chunk("x", domain="a", tenant="acme", lang="en", year=2020, draft=False)
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
        ({"missing": None}, ["x#0", "y#0", "z#0"]),
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
    with pytest.raises(StoreError, match="dimension"):
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


def test_flushed_folder_copies_as_the_same_store(store, make, tmp_path):
    store.flush()
    shutil.copytree(tmp_path / "store", tmp_path / "copy")
    copy = make.open("copy")
    query = unit([0.8, 0.3, 0.1])
    assert ids(copy.search(query, top_k=3)) == ids(store.search(query, top_k=3))
    assert sorted(c.id for c in copy.chunks({"lang": "fr"})) == ["y#0", "z#0"]
    copy.upsert([chunk("w", domain="c")], unit([[0, 0, 1]]))
    copy.delete(doc_ids=["x"])
    copy.flush()
    assert store.count() == 3 and make.open("store").count() == 3
    assert make.open("copy").count({"domain": "c"}) == 1


def test_opening_a_flushed_folder_changes_no_bytes(store, make, tmp_path):
    store.delete(doc_ids=["y"])
    store.flush()

    def contents():
        return {p: p.read_bytes() for p in (tmp_path / "store").rglob("*") if p.is_file()}

    before = contents()
    reader = make.open("store")
    reader.search(unit([1, 0, 0]), top_k=2)
    reader.close()
    assert contents() == before


def test_copy_folder_keeps_the_store_small(store, make, tmp_path):
    store.flush()
    copy_folder(tmp_path / "store", tmp_path / "copy")
    used = sum(p.stat().st_blocks * 512 for p in (tmp_path / "copy").rglob("*") if p.is_file())
    assert used < 4 << 20
    assert make.open("copy").count() == 3


def test_missing_or_foreign_folder_is_a_store_error(make, tmp_path):
    with pytest.raises(StoreError, match="missing"):
        make.open("nowhere")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "meta.json").write_text('{"backend": "elsewhere"}')
    with pytest.raises(StoreError, match="does not hold"):
        make.open("other")


def test_corrupt_folder_is_a_store_error(store, make, tmp_path):
    store.flush()
    store.close()
    folder = tmp_path / "store"
    for path in folder.rglob("*"):
        if path.is_file() and path.name != "meta.json" and path.stat().st_size:
            path.write_bytes(b"garbage")
    with pytest.raises(StoreError, match="corrupt"):
        make.open("store")


def test_create_refuses_an_existing_store(store, make):
    store.flush()
    with pytest.raises(StoreError, match="already holds"):
        make()


def test_close_is_idempotent(store):
    store.close()
    store.close()


def brute_force(vectors, chunks, query, top_k, filters):
    scores = vectors @ query
    order = [i for i in np.argsort(-scores) if matches(chunks[i], filters)]
    return [chunks[i].id for i in order[:top_k]]


def test_many_points_match_brute_force(backend, make):
    rng = np.random.default_rng(7)
    n, dimension = 2000, 32
    vectors = unit(rng.normal(size=(n, dimension)))
    chunks = [chunk(f"d{i}", domain="ab"[i % 2], bucket=int(i % 50), tag=f"t{i % 7}") for i in range(n)]
    store = make(dimension)
    store.upsert(chunks, vectors)
    store.delete(doc_ids=[f"d{i}" for i in range(0, n, 10)])
    live = [i for i in range(n) if i % 10]
    store.flush()
    vectors, chunks = vectors[live], [chunks[i] for i in live]
    overlaps = []
    for filters in [None, {"domain": "a"}, {"tag": ["t1", "t2"]}, {"bucket": 3}, {"domain": "b", "bucket": [5, 7]}]:
        query = unit(rng.normal(size=dimension))
        expected = brute_force(vectors, chunks, query, 10, filters)
        got = ids(store.search(query, top_k=10, filters=filters))
        assert len(got) == len(expected) == 10
        if backend in EXACT:
            assert got == expected
        overlaps.append(len(set(got) & set(expected)) / len(expected))
    assert np.mean(overlaps) >= 0.9
