"""Corpus -> chunks -> embeddings -> a new index version."""

from __future__ import annotations

import hashlib
import logging

from tqdm.auto import tqdm

from retro_vllm.config import RetroConfig
from retro_vllm.retrieval.chunker import chunk_document
from retro_vllm.retrieval.corpus import read_documents
from retro_vllm.retrieval.embedder import Embedder
from retro_vllm.retrieval.index import (
    IndexVersion,
    corpus_fingerprint,
    current_version,
    index_root,
    publish,
)
from retro_vllm.retrieval.stores.faiss import FaissStore
from retro_vllm.retrieval.types import Chunk

logger = logging.getLogger(__name__)


def collect_chunks(config: RetroConfig, embedder: Embedder) -> list[Chunk]:
    """Every configured domain's chunks, exact duplicates (same text) dropped."""
    seen_text: set[str] = set()
    seen_ids: set[str] = set()
    chunks: list[Chunk] = []
    duplicates = 0
    for domain in config.domains:
        for document in read_documents(domain.corpus, domain=domain.name):
            for chunk in chunk_document(
                document,
                embedder.tokenizer,
                max_tokens=min(config.retrieval.chunking.max_tokens, embedder.max_tokens),
                overlap_tokens=config.retrieval.chunking.overlap_tokens,
            ):
                digest = hashlib.sha256(chunk.text.encode()).hexdigest()
                if digest in seen_text:
                    duplicates += 1
                    continue
                if chunk.id in seen_ids:
                    logger.warning("chunk id %s appears twice; keeping the first", chunk.id)
                    continue
                seen_text.add(digest)
                seen_ids.add(chunk.id)
                chunks.append(chunk)
    if duplicates:
        logger.info("dropped %d duplicate chunks", duplicates)
    return chunks


def build_index(config: RetroConfig, embedder: Embedder, *, progress: bool = True) -> IndexVersion:
    fingerprint = corpus_fingerprint(config, embedder.path)
    chunks = collect_chunks(config, embedder)
    store = FaissStore(embedder.dimension)
    batch = max(config.embedder.batch_size, 1)
    with tqdm(total=len(chunks), desc="Embedding passages", unit="chunk", disable=not progress) as bar:
        for start in range(0, len(chunks), batch):
            part = chunks[start : start + batch]
            store.upsert(part, embedder.embed([_embedding_text(c) for c in part]))
            bar.update(len(part))
    if not chunks:
        logger.warning("the configured corpus has no passages; the index is empty")
    return publish(index_root(config), store, fingerprint=fingerprint)


def ensure_index(config: RetroConfig, embedder: Embedder, *, progress: bool = True) -> IndexVersion:
    """The current index if it was built from exactly this corpus, else a fresh build."""
    version = current_version(index_root(config))
    if version is not None and version.fingerprint == corpus_fingerprint(config, embedder.path):
        return version
    return build_index(config, embedder, progress=progress)


def _embedding_text(chunk: Chunk) -> str:
    # Titles carry much of a short passage's topic.
    return f"{chunk.title}\n{chunk.text}" if chunk.title else chunk.text


__all__ = ["build_index", "collect_chunks", "ensure_index"]
