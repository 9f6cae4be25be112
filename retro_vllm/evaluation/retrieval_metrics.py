"""Ranking metrics over document ids, with binary relevance (a document is gold or it is not).

Retrievers return chunks; rank by `doc_ranking(chunk.doc_id for chunk in hits)` first, so that a
document split into several chunks counts once, at its best rank.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence


def doc_ranking(chunk_doc_ids: Iterable[str]) -> list[str]:
    """Document ids in the order their first chunk was ranked."""
    return list(dict.fromkeys(chunk_doc_ids))


def recall_at_k(ranked_ids: Sequence[str], gold: Collection[str], k: int) -> float:
    """Share of the gold documents found in the first k."""
    return len(set(_top(ranked_ids, gold, k)) & set(gold)) / len(set(gold))


def reciprocal_rank(ranked_ids: Sequence[str], gold: Collection[str], k: int = 10) -> float:
    """1 / rank of the first gold document in the first k; 0 when none is there."""
    return next((1 / rank for rank, doc_id in enumerate(_top(ranked_ids, gold, k), 1) if doc_id in gold), 0.0)


def ndcg_at_k(ranked_ids: Sequence[str], gold: Collection[str], k: int = 10) -> float:
    """DCG of the first k over the DCG of the best possible ranking (all gold first)."""
    dcg = sum(1 / math.log2(rank + 1) for rank, doc_id in enumerate(_top(ranked_ids, gold, k), 1) if doc_id in gold)
    ideal = sum(1 / math.log2(rank + 1) for rank in range(1, min(k, len(set(gold))) + 1))
    return dcg / ideal


def summarize(per_query_rankings: Mapping[str, Sequence[str]], gold_by_query: Mapping[str, Collection[str]],
              ks: Sequence[int] = (1, 5, 10), cutoff: int = 10) -> dict[str, float]:
    """Averages over every query in `gold_by_query`: recall@k for each k, MRR and nDCG at `cutoff`.

    A query with no ranking scores 0 rather than being left out, so a retriever that fails on
    some questions cannot look better for it.
    """
    unknown = set(per_query_rankings) - set(gold_by_query)
    if unknown:
        raise ValueError(f"rankings for queries with no gold: {sorted(unknown)[:5]}")
    if not gold_by_query:
        raise ValueError("no queries to average over")
    rows = [(per_query_rankings.get(query_id, ()), gold) for query_id, gold in gold_by_query.items()]
    summary: dict[str, float] = {"queries": len(rows)}
    for k in ks:
        summary[f"recall@{k}"] = sum(recall_at_k(ranked, gold, k) for ranked, gold in rows) / len(rows)
    summary[f"mrr@{cutoff}"] = sum(reciprocal_rank(ranked, gold, cutoff) for ranked, gold in rows) / len(rows)
    summary[f"ndcg@{cutoff}"] = sum(ndcg_at_k(ranked, gold, cutoff) for ranked, gold in rows) / len(rows)
    return summary


def _top(ranked_ids: Sequence[str], gold: Collection[str], k: int) -> Sequence[str]:
    if not gold:
        raise ValueError("a query needs at least one gold document")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    top = ranked_ids[:k]
    # A repeated id would be counted twice in DCG and could push nDCG above 1.
    if len(set(top)) != len(top):
        raise ValueError("ranked ids repeat; pass chunk doc ids through doc_ranking() first")
    return top
