import numpy as np
import pytest

from retro_vllm.routing.router import DomainRouter


def unit(rows):
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture
def router():
    vectors = unit([[1, 0.1, 0], [0.9, 0, 0.1], [0, 1, 0.1], [0.1, 0.9, 0], [0, 0.1, 1], [0.1, 0, 0.9]])
    return DomainRouter.train(vectors, ["a", "a", "b", "b", "c", "c"], threshold=0.6, temperature=0.05)


def test_routes_to_the_nearest_domain_with_confidence(router):
    decision = router.route(unit([[1, 0, 0]])[0])
    assert decision.domain == "a" and decision.best == "a" and decision.score > 0.9


def test_below_threshold_goes_to_the_base_model(router):
    decision = router.route(unit([[1, 1, 1]])[0])
    assert decision.domain is None and decision.score < 0.6 and decision.best in {"a", "b", "c"}


def test_probabilities_sum_to_one(router):
    probs = router.probabilities(unit([[0.3, 0.2, 0.9], [1, 0, 0]]))
    assert np.allclose(probs.sum(axis=1), 1.0)


def test_save_load_round_trip(router, tmp_path):
    router.save(tmp_path)
    loaded = DomainRouter.load(tmp_path)
    vector = unit([[0.2, 0.9, 0.1]])[0]
    assert loaded.route(vector) == router.route(vector)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_needs_two_domains():
    with pytest.raises(ValueError):
        DomainRouter.train(unit([[1, 0, 0]]), ["a"], threshold=0.5, temperature=0.05)


def test_training_from_a_store_reads_it_in_batches_and_matches_training_on_everything(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from retro_vllm.retrieval.stores.faiss import FaissStore
    from retro_vllm.retrieval.types import Chunk
    from retro_vllm.routing import training

    rng = np.random.default_rng(0)
    domains = ["astronomy", "cooking", "networking"]
    chunks = [Chunk(id=f"d{i}#0", doc_id=f"d{i}", text=f"text {i}", domain=domains[i % 3]) for i in range(50)]
    vectors = unit(rng.standard_normal((50, 8)) + 3 * np.eye(3, 8)[[i % 3 for i in range(50)]])
    store = FaissStore.create(tmp_path / "store", 8)
    store.upsert(chunks, vectors)
    store.flush()

    reads = []
    real_vectors = store.vectors
    monkeypatch.setattr(store, "vectors", lambda ids: reads.append(len(ids)) or real_vectors(ids))
    monkeypatch.setattr(training, "TRAINING_BATCH", 7)
    config = SimpleNamespace(home_dir=tmp_path / "home", domains=[],
                             routing=SimpleNamespace(threshold=0.5, temperature=0.05))
    version = SimpleNamespace(name="v1", backend="faiss", config_fingerprint="f")
    router = training.ensure_router(config, None, store, version)

    assert reads == [7] * 7 + [1]  # never more than a batch of vectors at once
    expected = DomainRouter.train(vectors, [c.domain for c in chunks], threshold=0.5, temperature=0.05)
    assert router.domains == expected.domains == domains
    np.testing.assert_allclose(router.weights, expected.weights, rtol=1e-5, atol=1e-5)
    # saved, and found again for the same version without reading the store
    reads.clear()
    assert training.ensure_router(config, None, store, version).domains == domains and reads == []
