"""Bounded LRU caches for query embeddings and search results, with hit/miss counters.

Result keys include the index version, so a new version is never answered from the old one;
entries of older versions age out by LRU.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from typing import Any, Generic, Hashable, TypeVar

from prometheus_client import Counter

V = TypeVar("V")

HITS = Counter("retro_retrieval_cache_hits", "Retrieval cache hits.", ("cache",))
MISSES = Counter("retro_retrieval_cache_misses", "Retrieval cache misses.", ("cache",))

_SPACE = re.compile(r"\s+")


def normalize_query(query: str) -> str:
    return _SPACE.sub(" ", query).strip().casefold()


class LRUCache(Generic[V]):
    def __init__(self, name: str, size: int):
        self.name = name
        self.size = size
        self._items: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> V | None:
        if self.size <= 0:
            return None
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
            else:
                self._items.move_to_end(key)
                self.hits += 1
        (MISSES if value is None else HITS).labels(self.name).inc()
        return value

    def put(self, key: Hashable, value: V) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)

    def stats(self) -> dict[str, int]:
        return {"size": len(self._items), "capacity": self.size, "hits": self.hits, "misses": self.misses}


def result_key(version: str, query: str, *, top_k: int, mode: str, filters: dict[str, Any] | None) -> tuple:
    return (version, normalize_query(query), top_k, mode, json.dumps(filters or {}, sort_keys=True, default=str))
