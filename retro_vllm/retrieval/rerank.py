"""Second-stage ordering of retrieved candidates, behind one small interface.

MMR is built in (it needs only the vectors already stored); a cross-encoder is used when a
local model folder is configured (none ships inside a package here).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from retro_vllm.retrieval.types import ScoredChunk

logger = logging.getLogger(__name__)

VectorsOf = Callable[[Sequence[str]], np.ndarray]


class Reranker(Protocol):
    stage: str

    def rerank(self, query: str, query_vector: np.ndarray, candidates: list[ScoredChunk], *, top_k: int,
               vectors_of: VectorsOf) -> list[ScoredChunk]:
        """The best `top_k` of `candidates` in a new order; each keeps its earlier `scores` and
        adds its own under `stage`."""
        ...


class MMRReranker:
    """Maximal marginal relevance: relevance to the query minus redundancy with what is already
    picked, so near-duplicate chunks do not fill the prompt."""

    stage = "mmr"

    def __init__(self, lambda_: float = 0.7):
        self.lambda_ = lambda_

    def rerank(self, query, query_vector, candidates, *, top_k, vectors_of):
        if len(candidates) <= 1:
            return [_restaged(c, self.stage, c.score) for c in candidates[:top_k]]
        vectors = vectors_of([c.chunk.id for c in candidates])
        relevance = vectors @ np.asarray(query_vector, dtype=np.float32)
        similarity = vectors @ vectors.T
        picked: list[int] = []
        values: list[float] = []
        remaining = list(range(len(candidates)))
        while remaining and len(picked) < top_k:
            redundancy = similarity[np.ix_(remaining, picked)].max(axis=1) if picked else np.zeros(len(remaining))
            mmr = self.lambda_ * relevance[remaining] - (1 - self.lambda_) * redundancy
            best = int(np.argmax(mmr))
            picked.append(remaining.pop(best))
            values.append(float(mmr[best]))
        return [_restaged(candidates[i], self.stage, v) for i, v in zip(picked, values)]


class CrossEncoderReranker:
    stage = "rerank"

    def __init__(self, path: Path, *, batch_size: int = 32):
        self.path = path
        self.batch_size = batch_size
        self._model = None
        self._lock = threading.Lock()

    @property
    def model(self):
        with self._lock:
            if self._model is None:
                from sentence_transformers import CrossEncoder

                self._model = CrossEncoder(str(self.path), device="cpu", local_files_only=True)
            return self._model

    def rerank(self, query, query_vector, candidates, *, top_k, vectors_of):
        if not candidates:
            return []
        pairs = [(query, f"{c.chunk.title}\n{c.chunk.text}" if c.chunk.title else c.chunk.text) for c in candidates]
        scores = np.asarray(self.model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False),
                            dtype=np.float32).reshape(len(candidates), -1)[:, -1]
        order = np.argsort(-scores, kind="stable")[:top_k]
        return [_restaged(candidates[i], self.stage, float(scores[i])) for i in order.tolist()]


def _restaged(hit: ScoredChunk, stage: str, score: float) -> ScoredChunk:
    return ScoredChunk(hit.chunk, score, stage, {**hit.scores, stage: score})


def make_reranker(method: str, *, mmr_lambda: float, cross_encoder_path: Path | None) -> Reranker | None:
    if method == "none":
        return None
    if method == "mmr":
        return MMRReranker(mmr_lambda)
    if cross_encoder_path is None:
        raise ValueError("retrieval.rerank.method cross-encoder needs retrieval.rerank.cross_encoder_path")
    return CrossEncoderReranker(cross_encoder_path)
