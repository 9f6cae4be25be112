"""Query -> ranked chunks, over whichever index version is current."""

from __future__ import annotations

import logging
import threading

import numpy as np

from retro_vllm.config import RetroConfig
from retro_vllm.retrieval.embedder import Embedder
from retro_vllm.retrieval.index import CURRENT, IndexVersion, current_version, index_root, open_version
from retro_vllm.retrieval.stores.base import Filters
from retro_vllm.retrieval.stores.faiss import FaissStore
from retro_vllm.retrieval.types import ScoredChunk

logger = logging.getLogger(__name__)


class Retriever:
    def __init__(self, config: RetroConfig, embedder: Embedder, version: IndexVersion):
        self.config = config
        self.embedder = embedder
        self._root = index_root(config)
        self._lock = threading.Lock()
        self.version = version
        self.store: FaissStore = open_version(version)
        self._pointer_mtime = self._mtime()

    def _mtime(self) -> float:
        try:
            return (self._root / CURRENT).stat().st_mtime_ns
        except FileNotFoundError:
            return 0

    def _refresh(self) -> None:
        """Pick up a version published by another process (one stat per request)."""
        mtime = self._mtime()
        if mtime == self._pointer_mtime:
            return
        with self._lock:
            if mtime == self._pointer_mtime:
                return
            version = current_version(self._root)
            if version is not None and version.name != self.version.name:
                self.store = open_version(version)
                self.version = version
                logger.info("now serving index version %s", version.name)
            self._pointer_mtime = mtime

    def search(self, query: str, *, top_k: int, domain: str | None = None, filters: Filters | None = None,
               vector: np.ndarray | None = None) -> list[ScoredChunk]:
        """`vector`, when given, is the query's embedding already computed (for routing)."""
        self._refresh()
        merged: Filters = dict(filters or {})
        if domain is not None:
            merged["domain"] = domain
        if vector is None:
            vector = self.embedder.embed_query(query)
        hits = self.store.search(vector, top_k=top_k, filters=merged or None)
        return [h for h in hits if h.score >= self.config.retrieval.min_score]

    def passage_counts(self) -> dict[str, int]:
        return {d: self.store.count({"domain": d}) for d in self.config.domain_names}
