"""Reciprocal-rank fusion of several ranked lists (dense, BM25).

RRF uses ranks, not scores: cosine and BM25 scores live on unrelated scales, and ranks
need no calibration per corpus.
"""

from __future__ import annotations

from collections import defaultdict

from retro_vllm.retrieval.types import ScoredChunk


def reciprocal_rank_fusion(
    ranked: dict[str, list[ScoredChunk]], weights: dict[str, float], *, k: int = 60
) -> list[ScoredChunk]:
    """Fused list, best first: score = sum over lists of weight / (k + rank). Each result keeps
    every stage's own score in `scores`, plus `hybrid`."""
    fused: dict[str, float] = defaultdict(float)
    first: dict[str, ScoredChunk] = {}
    stage_scores: dict[str, dict[str, float]] = defaultdict(dict)
    for name, hits in ranked.items():
        weight = weights.get(name, 1.0)
        for rank, hit in enumerate(hits, 1):
            cid = hit.chunk.id
            fused[cid] += weight / (k + rank)
            first.setdefault(cid, hit)
            stage_scores[cid].update(hit.scores)
    order = sorted(fused, key=lambda cid: (-fused[cid], cid))
    return [
        ScoredChunk(first[cid].chunk, fused[cid], "hybrid", {**stage_scores[cid], "hybrid": fused[cid]})
        for cid in order
    ]
