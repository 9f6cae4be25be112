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
