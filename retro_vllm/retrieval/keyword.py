"""BM25 over the chunks of one index version (bm25s), stored beside the vector store.

Dense retrieval misses exact terms (function names, error codes, port numbers); BM25 finds
them. It is built at publish time over every chunk of the version, so it works the same
for each embedded backend.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Iterable

import numpy as np

from retro_vllm.retrieval.stores.base import Filters, matches
from retro_vllm.retrieval.types import Chunk, ScoredChunk

logger = logging.getLogger(__name__)

CHUNKS_FILE = "chunks.jsonl"
EMPTY_MARK = "empty"


def _tokenize(texts: list[str], *, ids: bool = True):
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", show_progress=False, return_ids=ids)


class KeywordIndex:
    def __init__(self, chunks: list[Chunk], model=None):
        self.chunks = chunks
        self._model = model
        self._masks: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    @staticmethod
    def write(chunks: Iterable[Chunk], folder: Path) -> None:
        """Write the keyword index of `chunks` to `folder`. The chunks are streamed to disk as they
        come and only their texts are held for BM25, so a publish of a large store does not hold
        every chunk at once."""
        import bm25s

        folder.mkdir(parents=True, exist_ok=True)
        texts = []
        with (folder / CHUNKS_FILE).open("w", encoding="utf-8") as handle:
            for chunk in chunks:
                handle.write(json.dumps(chunk.payload(), ensure_ascii=False) + "\n")
                texts.append(_text(chunk))
        tokens = _tokenize(texts) if texts else None
        del texts
        if tokens is None or not tokens.vocab:  # no chunks, or only stop words and one-letter tokens
            (folder / EMPTY_MARK).write_text("")
            return
        model = bm25s.BM25()
        model.index(tokens, show_progress=False)
        model.save(str(folder), show_progress=False)

    @classmethod
    def build(cls, chunks: Iterable[Chunk], folder: Path) -> "KeywordIndex":
        """`write`, then the index as a server reads it."""
        cls.write(chunks, folder)
        return cls.load(folder)

    @classmethod
    def load(cls, folder: Path) -> "KeywordIndex | None":
        """None when the version has no keyword index (made by an older release)."""
        import bm25s

        if not (folder / CHUNKS_FILE).is_file():
            return None
        with (folder / CHUNKS_FILE).open(encoding="utf-8") as handle:
            chunks = [Chunk.from_payload(json.loads(line)) for line in handle]
        if (folder / EMPTY_MARK).exists():
            return cls(chunks)
        model = bm25s.BM25.load(str(folder), show_progress=False, mmap=False)
        return cls(chunks, model)

    def keyword_search(self, query: str, *, top_k: int, filters: Filters | None = None) -> list[ScoredChunk]:
        if self._model is None or not self.chunks or top_k <= 0:
            return []
        words = _tokenize([query], ids=False)
        if not words[0]:  # only stop words: BM25 has nothing to match
            return []
        mask = self._mask(filters) if filters else None
        k = min(top_k, int(mask.sum()) if mask is not None else len(self.chunks))
        if k <= 0:
            return []
        ids, scores = self._model.retrieve(words, k=k, weight_mask=mask, show_progress=False, n_threads=1)
        return [
            ScoredChunk(self.chunks[int(i)], float(s), "bm25", {"bm25": float(s)})
            for i, s in zip(ids[0].tolist(), scores[0].tolist())
            if s > 0
        ]

    def _mask(self, filters: Filters) -> np.ndarray:
        key = json.dumps(filters, sort_keys=True, default=str)
        with self._lock:
            mask = self._masks.get(key)
            if mask is None:
                mask = np.fromiter((matches(c, filters) for c in self.chunks), dtype=np.float32, count=len(self.chunks))
                if len(self._masks) > 256:  # filters come from requests: keep the memo bounded
                    self._masks.clear()
                self._masks[key] = mask
        return mask


def _text(chunk: Chunk) -> str:
    return f"{chunk.title}\n{chunk.text}" if chunk.title else chunk.text


class LazyKeywordIndex:
    """A version's keyword index, read from disk on its first search: a server whose domains all
    search dense never holds a second copy of every chunk in memory."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._index: KeywordIndex | None = None
        self._loaded = False
        self._lock = threading.Lock()

    def keyword_search(self, query: str, *, top_k: int, filters: Filters | None = None) -> list[ScoredChunk]:
        with self._lock:
            if not self._loaded:
                self._index = KeywordIndex.load(self.folder)
                self._loaded = True
                if self._index is None:
                    logger.warning("index version at %s has no keyword index; BM25 finds nothing", self.folder.parent)
        return self._index.keyword_search(query, top_k=top_k, filters=filters) if self._index else []

