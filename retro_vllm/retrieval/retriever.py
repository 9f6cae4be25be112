"""Query -> ranked chunks over whichever index version is current:
embed (cached) -> dense search -> BM25 + reciprocal-rank fusion (hybrid) -> rerank -> top_k."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Literal

import numpy as np

from retro_vllm.config import RetroConfig
from retro_vllm.retrieval.cache import LRUCache, normalize_query, result_key
from retro_vllm.retrieval.embedder import Embedder
from retro_vllm.retrieval.fusion import reciprocal_rank_fusion
from retro_vllm.retrieval.index import CURRENT, KEYWORD_DIR, IndexVersion, current_version, index_root, open_store
from retro_vllm.retrieval.keyword import LazyKeywordIndex
from retro_vllm.retrieval.rerank import Reranker, make_reranker
from retro_vllm.retrieval.stores.base import Filters, KeywordSearchable, VectorStore
from retro_vllm.retrieval.types import ScoredChunk

logger = logging.getLogger(__name__)

Mode = Literal["dense", "bm25", "hybrid"]


@dataclass(frozen=True)
class _Serving:
    """One version's readers, swapped as a unit so a search never mixes two versions."""

    version: IndexVersion
    store: VectorStore
    keyword: KeywordSearchable | None  # the embedded BM25 sidecar (keyword.py) or a server's own (Weaviate)


class Retriever:
    def __init__(self, config: RetroConfig, embedder: Embedder, version: IndexVersion):
        self.config = config
        self.embedder = embedder
        self._root = index_root(config)
        self._lock = threading.Lock()
        self._serving = self._open(version)
        self._pointer_mtime = self._mtime()
        section = config.retrieval
        self.reranker: Reranker | None = make_reranker(
            section.rerank.method, mmr_lambda=section.rerank.mmr_lambda,
            cross_encoder_path=section.rerank.cross_encoder_path,
        )
        self.results: LRUCache[list[ScoredChunk]] = LRUCache("results", section.cache.results)
        self.embeddings: LRUCache[np.ndarray] = LRUCache("embeddings", section.cache.embeddings)
        self._warned_no_keyword = False

    # -- versions -----------------------------------------------------------------
    def _open(self, version: IndexVersion) -> _Serving:
        store = open_store(self.config, version, self.embedder.dimension)
        if version.embedded:
            keyword = LazyKeywordIndex(version.folder / KEYWORD_DIR)
        else:
            keyword = store if isinstance(store, KeywordSearchable) else None
        return _Serving(version, store, keyword)

    @property
    def version(self) -> IndexVersion:
        return self._serving.version

    @property
    def store(self) -> VectorStore:
        return self._serving.store

    def _mtime(self) -> int:
        try:
            return (self._root / CURRENT).stat().st_mtime_ns
        except FileNotFoundError:
            return 0

    def refresh(self) -> None:
        """Pick up a version published by another process or thread (one stat per search)."""
        mtime = self._mtime()
        if mtime == self._pointer_mtime:
            return
        with self._lock:
            if mtime == self._pointer_mtime:
                return
            version = current_version(self._root)
            if version is not None and version.name != self._serving.version.name:
                # Searches in flight keep the old readers; they are dropped when those finish.
                self._serving = self._open(version) if version.embedded else _Serving(
                    version, self._serving.store, self._serving.keyword)
                logger.info("now serving index version %s", version.name)
            self._pointer_mtime = mtime

    # -- search -------------------------------------------------------------------
    def embed_query(self, query: str) -> np.ndarray:
        key = normalize_query(query)
        vector = self.embeddings.get(key)
        if vector is None:
            vector = self.embedder.embed_query(query)
            self.embeddings.put(key, vector)
        return vector

    def mode_for(self, domain: str | None) -> Mode:
        section = self.config.domain(domain) if domain else None
        return (section.retrieval_mode if section and section.retrieval_mode else None) or self.config.retrieval.mode

    def search(self, query: str, *, top_k: int, domain: str | None = None, filters: Filters | None = None,
               vector: np.ndarray | None = None, mode: Mode | None = None, rerank: bool = True) -> list[ScoredChunk]:
        """`vector`, when given, is the query's embedding already computed (for routing).
        `mode` and `rerank` override the configuration (evaluation compares them)."""
        self.refresh()
        serving = self._serving
        merged: Filters = dict(filters or {})
        if domain is not None:
            merged["domain"] = domain
        mode = mode or self.mode_for(domain)
        reranker = self.reranker if rerank else None
        key = result_key(serving.version.name, query, top_k=top_k, filters=merged,
                         mode=f"{mode}:{self._keyword_weight(domain)}:{reranker.stage if reranker else ''}")
        cached = self.results.get(key)
        if cached is not None:
            return cached
        hits = self._search(serving, query, top_k=top_k, domain=domain, filters=merged or None, vector=vector,
                            mode=mode, reranker=reranker)
        self.results.put(key, hits)
        return hits

    def _search(self, serving: _Serving, query: str, *, top_k: int, domain: str | None, filters: Filters | None,
                vector: np.ndarray | None, mode: Mode, reranker: Reranker | None) -> list[ScoredChunk]:
        section = self.config.retrieval
        pool = top_k
        if mode != "dense":
            pool = max(pool, section.hybrid.candidates)
        if reranker is not None:
            pool = max(pool, section.rerank.candidates)
        ranked: dict[str, list[ScoredChunk]] = {}
        if mode in ("dense", "hybrid") or reranker is not None:
            if vector is None:
                vector = self.embed_query(query)
        if mode in ("dense", "hybrid"):
            dense = serving.store.search(vector, top_k=pool, filters=filters)
            ranked["dense"] = [h for h in dense if h.score >= section.min_score]
        if mode in ("bm25", "hybrid"):
            if serving.keyword is None:
                self._warn_no_keyword()
            else:
                ranked["bm25"] = serving.keyword.keyword_search(query, top_k=pool, filters=filters)
        if len(ranked) > 1:
            weights = {"dense": section.hybrid.dense_weight, "bm25": self._keyword_weight(domain)}
            hits = reciprocal_rank_fusion(ranked, weights, k=section.hybrid.rrf_k)
        else:
            hits = next(iter(ranked.values()), [])
        if reranker is not None and hits:
            hits = reranker.rerank(query, vector, hits[: section.rerank.candidates], top_k=top_k,
                                   vectors_of=serving.store.vectors)
        return hits[:top_k]

    def _keyword_weight(self, domain: str | None) -> float:
        section = self.config.domain(domain) if domain else None
        if section is not None and section.keyword_weight is not None:
            return section.keyword_weight
        return self.config.retrieval.hybrid.keyword_weight

    def _warn_no_keyword(self) -> None:
        if not self._warned_no_keyword:
            logger.warning("retrieval: backend %s has no keyword search; hybrid falls back to dense",
                           self.config.retrieval.backend)
            self._warned_no_keyword = True

    def passage_counts(self) -> dict[str, int]:
        self.refresh()
        store = self._serving.store
        return {d: store.count({"domain": d}) for d in self.config.domain_names}

    def cache_stats(self) -> dict[str, dict[str, int]]:
        return {"results": self.results.stats(), "embeddings": self.embeddings.stats()}
