"""Fusion, reranking, the keyword index and the caches: pure logic, no engine."""

import dataclasses

import numpy as np
import pytest

from retro_vllm.retrieval.cache import LRUCache, normalize_query, result_key
from retro_vllm.retrieval.fusion import reciprocal_rank_fusion
from retro_vllm.retrieval.keyword import KeywordIndex
from retro_vllm.retrieval.rerank import MMRReranker, make_reranker
from retro_vllm.retrieval.types import Chunk, ScoredChunk


def chunk(doc, text="", domain="a", **meta):
    return Chunk(id=f"{doc}#0", doc_id=doc, text=text or doc, domain=domain, title="", metadata=meta)


def hit(doc, score, stage="dense"):
    return ScoredChunk(chunk(doc), score, stage, {stage: score})


def test_rrf_rewards_agreement_and_keeps_every_stage_score():
    fused = reciprocal_rank_fusion(
        {"dense": [hit("a", 0.9), hit("b", 0.8), hit("c", 0.7)], "bm25": [hit("c", 12.0, "bm25"), hit("b", 3.0, "bm25")]},
        {"dense": 1.0, "bm25": 1.0}, k=60,
    )
    # c: ranks 3 and 1, b: 2 and 2, a: 1 in one list only
    assert [h.chunk.id for h in fused] == ["c#0", "b#0", "a#0"]
    assert fused[0].stage == "hybrid"
    assert fused[1].scores["dense"] == 0.8 and fused[1].scores["bm25"] == 3.0
    assert fused[0].scores["hybrid"] == pytest.approx(1 / 63 + 1 / 61)
    assert fused[1].scores["hybrid"] == pytest.approx(2 / 62)


def test_rrf_weight_zero_ignores_a_ranking():
    fused = reciprocal_rank_fusion({"dense": [hit("a", 0.9)], "bm25": [hit("z", 5.0, "bm25")]}, {"bm25": 0.0})
    assert fused[0].chunk.id == "a#0" and fused[1].scores["hybrid"] == 0.0


def test_mmr_skips_a_near_duplicate():
    vectors = {"a#0": [1, 0, 0], "dup#0": [0.99, 0.14, 0], "b#0": [0.6, 0.8, 0]}
    unit = {k: np.asarray(v, np.float32) / np.linalg.norm(v) for k, v in vectors.items()}
    candidates = [hit("a", 0.99), hit("dup", 0.98), hit("b", 0.6)]
    picked = MMRReranker(0.3).rerank("q", np.asarray([1, 0, 0], np.float32), candidates, top_k=2,
                                     vectors_of=lambda ids: np.stack([unit[i] for i in ids]))
    assert [h.chunk.id for h in picked] == ["a#0", "b#0"]
    assert picked[0].stage == "mmr" and "dense" in picked[0].scores and "mmr" in picked[0].scores


def test_mmr_with_lambda_one_is_relevance_order():
    unit = np.eye(3, dtype=np.float32)
    candidates = [hit("a", 0.1), hit("b", 0.9), hit("c", 0.5)]
    query = np.asarray([0.1, 0.9, 0.5], np.float32)
    picked = MMRReranker(1.0).rerank("q", query, candidates, top_k=3, vectors_of=lambda ids: unit[[ "abc".index(i[0]) for i in ids]])
    assert [h.chunk.id for h in picked] == ["b#0", "c#0", "a#0"]


def test_reranker_factory():
    assert make_reranker("none", mmr_lambda=0.5, cross_encoder_path=None) is None
    assert isinstance(make_reranker("mmr", mmr_lambda=0.5, cross_encoder_path=None), MMRReranker)
    with pytest.raises(ValueError, match="cross_encoder_path"):
        make_reranker("cross-encoder", mmr_lambda=0.5, cross_encoder_path=None)


def test_keyword_index_finds_exact_terms_filters_and_round_trips(tmp_path):
    chunks = [
        chunk("tls", "HTTPS uses TCP port 443 and TLS", domain="net", lang="en"),
        chunk("dns", "DNS resolves names over UDP port 53", domain="net", lang="en"),
        chunk("bread", "Knead the dough until the gluten develops", domain="food", lang="en"),
        chunk("pain", "Le pain cuit au four a 230 degres", domain="food", lang="fr"),
    ]
    built = KeywordIndex.build(iter(chunks), tmp_path / "bm25")  # a publish streams the store's chunks
    loaded = KeywordIndex.load(tmp_path / "bm25")
    for index in (built, loaded):
        assert index.keyword_search("port 443", top_k=2)[0].chunk.id == "tls#0"
        hits = index.keyword_search("port", top_k=5, filters={"domain": "net"})
        assert {h.chunk.id for h in hits} == {"tls#0", "dns#0"} and all(h.stage == "bm25" for h in hits)
        assert index.keyword_search("port", top_k=5, filters={"domain": "food"}) == []
        assert [h.chunk.id for h in index.keyword_search("pain four", top_k=5, filters={"lang": ["fr"]})] == ["pain#0"]
        assert index.keyword_search("the and of", top_k=5) == []  # stop words only
        assert index.keyword_search("zebra", top_k=5) == []


def test_keyword_index_empty_and_missing(tmp_path):
    assert KeywordIndex.build([], tmp_path / "e").keyword_search("x", top_k=3) == []
    assert KeywordIndex.load(tmp_path / "e").keyword_search("x", top_k=3) == []
    assert KeywordIndex.load(tmp_path / "missing") is None


def test_chunk_payload_is_a_detached_copy_of_every_field():
    original = Chunk(id="a#0", doc_id="a", text="t", domain="d", title="T", url="u", tenant="x",
                     metadata={"tags": ["one"]})
    payload = original.payload()
    assert payload == dataclasses.asdict(original)
    assert list(payload) == [f.name for f in dataclasses.fields(Chunk)]
    payload["metadata"]["tags"].append("two")
    assert original.metadata == {"tags": ["one"]}
    assert Chunk.from_payload(original.payload()) == original


def test_lru_cache_bounds_and_counts():
    cache = LRUCache("test", 2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now most recent
    cache.put("c", 3)  # evicts b
    assert cache.get("b") is None and cache.get("c") == 3
    assert cache.stats() == {"size": 2, "capacity": 2, "hits": 2, "misses": 1}
    off = LRUCache("off", 0)
    off.put("a", 1)
    assert off.get("a") is None and len(off) == 0


def test_result_keys_normalize_the_query_and_separate_versions_and_filters():
    assert normalize_query("  What  is\nDNS? ") == normalize_query("what is dns?")
    base = result_key("v1", "What is DNS?", top_k=4, mode="dense", filters={"domain": "net"})
    assert base == result_key("v1", " what is  dns? ", top_k=4, mode="dense", filters={"domain": "net"})
    assert base != result_key("v2", "What is DNS?", top_k=4, mode="dense", filters={"domain": "net"})
    assert base != result_key("v1", "What is DNS?", top_k=4, mode="dense", filters={"domain": "net", "tenant": "t"})
    assert base != result_key("v1", "What is DNS?", top_k=5, mode="dense", filters={"domain": "net"})


def test_lazy_keyword_index_reads_on_first_search(tmp_path):
    from retro_vllm.retrieval.keyword import LazyKeywordIndex

    KeywordIndex.build([chunk("tls", "HTTPS uses TCP port 443")], tmp_path / "bm25")
    lazy = LazyKeywordIndex(tmp_path / "bm25")
    assert lazy._index is None  # nothing read at open
    assert lazy.keyword_search("port 443", top_k=1)[0].chunk.id == "tls#0"
    assert LazyKeywordIndex(tmp_path / "missing").keyword_search("port", top_k=1) == []


def test_cross_encoder_reranker_orders_by_the_model(tmp_path):
    # No cross-encoder ships in a package: build one from the packaged MiniLM (its scoring head
    # is freshly initialised), save it, and check the reranker loads it from disk and follows it.
    from sentence_transformers import CrossEncoder

    from retro_vllm.retrieval.embedder import packaged_embedder_path
    from retro_vllm.retrieval.rerank import CrossEncoderReranker

    import torch

    torch.manual_seed(0)
    CrossEncoder(str(packaged_embedder_path()), num_labels=1, device="cpu").save(str(tmp_path / "ce"))
    candidates = [hit(name, 0.5) for name in ("alpha", "beta", "gamma", "delta")]
    reranker = make_reranker("cross-encoder", mmr_lambda=0.5, cross_encoder_path=tmp_path / "ce")
    ranked = reranker.rerank("which one?", None, candidates, top_k=3, vectors_of=None)
    expected = CrossEncoder(str(tmp_path / "ce"), device="cpu").predict([("which one?", c.chunk.text) for c in candidates])
    assert isinstance(reranker, CrossEncoderReranker)
    assert [h.chunk.id for h in ranked] == [candidates[i].chunk.id for i in np.argsort(-expected)[:3]]
    assert ranked[0].stage == "rerank" and ranked[0].scores["rerank"] == pytest.approx(float(expected.max()), abs=1e-5)
    assert ranked[0].scores["dense"] == 0.5
