import math

import pytest

from retro_vllm.evaluation.retrieval_metrics import doc_ranking, ndcg_at_k, recall_at_k, reciprocal_rank, summarize


def test_doc_ranking_keeps_each_document_at_its_first_chunk():
    assert doc_ranking(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]


def test_recall_counts_the_share_of_gold_in_the_first_k():
    ranked = ["a", "b", "c", "d"]
    assert recall_at_k(ranked, {"b", "d"}, 1) == 0
    assert recall_at_k(ranked, {"b", "d"}, 2) == 0.5
    assert recall_at_k(ranked, {"b", "d"}, 4) == 1
    assert recall_at_k(ranked, {"b", "d"}, 10) == 1
    assert recall_at_k(ranked, ["z"], 4) == 0


def test_reciprocal_rank_is_one_over_the_first_gold_rank_within_k():
    assert reciprocal_rank(["a", "b", "c"], {"c", "b"}) == 0.5
    assert reciprocal_rank(["a", "b", "c"], {"a"}) == 1
    assert reciprocal_rank(["a", "b", "c"], {"c"}, k=2) == 0
    assert reciprocal_rank([], {"c"}) == 0


def test_ndcg_against_hand_computed_values():
    # Gold at ranks 2 and 4: (1/log2(3) + 1/log2(5)) / (1 + 1/log2(3)).
    assert ndcg_at_k(["a", "b", "c", "d"], {"b", "d"}) == pytest.approx(1.0616063 / 1.6309298, abs=1e-6)
    assert ndcg_at_k(["b", "d", "a"], {"b", "d"}) == 1
    # One gold at rank 3: the ideal puts it at rank 1.
    assert ndcg_at_k(["a", "b", "c"], {"c"}) == pytest.approx(0.5)
    assert ndcg_at_k(["a", "b", "c"], {"c"}, k=2) == 0
    # More gold than k: the ideal is k gold documents, so all-gold top k scores 1.
    assert ndcg_at_k(["a", "b"], {"a", "b", "c"}, k=2) == 1


def test_metrics_refuse_repeated_ids_and_queries_without_gold():
    with pytest.raises(ValueError, match="doc_ranking"):
        ndcg_at_k(["a", "a"], {"a"})
    with pytest.raises(ValueError, match="gold"):
        recall_at_k(["a"], set(), 1)


def test_summarize_averages_over_all_gold_queries_counting_missing_rankings_as_zero():
    summary = summarize({"q1": ["a", "b"], "q2": ["x", "y", "z"]},
                        {"q1": ["b"], "q2": ["z", "w"], "q3": ["c"]})
    assert summary["queries"] == 3
    assert summary["recall@1"] == 0
    assert summary["recall@5"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert summary["recall@10"] == summary["recall@5"]
    assert summary["mrr@10"] == pytest.approx((1 / 2 + 1 / 3) / 3)
    q2_ndcg = (1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert summary["ndcg@10"] == pytest.approx((1 / math.log2(3) + q2_ndcg) / 3)


def test_summarize_rejects_rankings_for_unknown_queries():
    with pytest.raises(ValueError, match="no gold"):
        summarize({"q9": ["a"]}, {"q1": ["a"]})
