"""Documents -> chunks -> embeddings -> a new index version (see index.py for the swap)."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
from tqdm.auto import tqdm

from retro_vllm.config import RetroConfig
from retro_vllm.retrieval.chunker import chunk_document
from retro_vllm.retrieval.corpus import read_documents
from retro_vllm.retrieval.embedder import Embedder
from retro_vllm.retrieval.index import (
    SOURCE_CONFIG,
    SOURCE_INGEST,
    DocumentEntry,
    IndexVersion,
    IndexWriter,
    content_hash,
    corpus_fingerprint,
    current_version,
    index_root,
    open_store,
    read_manifest,
)
from retro_vllm.retrieval.types import Chunk, Document

logger = logging.getLogger(__name__)


class IngestError(ValueError):
    """Input that cannot be indexed (unknown domain, repeated id); nothing was written."""


@dataclass
class IngestReport:
    added: int = 0
    replaced: int = 0
    unchanged: int = 0
    deleted: int = 0
    chunks: int = 0
    duplicate_chunks: int = 0
    deleted_chunks: int = 0
    missing: list[str] = field(default_factory=list)  # ids asked to be deleted that the index lacks
    version: IndexVersion | None = None

    def to_json(self) -> dict:
        return {
            "index_version": self.version.name if self.version else None,
            "documents": {"added": self.added, "replaced": self.replaced, "unchanged": self.unchanged,
                          "deleted": self.deleted},
            "chunks": {"added": self.chunks, "duplicates_dropped": self.duplicate_chunks, "deleted": self.deleted_chunks},
            "missing": self.missing,
        }


def embedder_id(embedder: Embedder) -> str:
    return str(embedder.path)


def embedding_text(chunk: Chunk) -> str:
    # Titles carry much of a short passage's topic.
    return f"{chunk.title}\n{chunk.text}" if chunk.title else chunk.text


def embed_chunks(embedder: Embedder, chunks: Sequence[Chunk], *, progress: bool = False) -> np.ndarray:
    if not chunks:
        return np.zeros((0, embedder.dimension), dtype=np.float32)
    parts = []
    batch = max(embedder.batch_size, 1)
    with tqdm(total=len(chunks), desc="Embedding passages", unit="chunk", disable=not progress) as bar:
        for start in range(0, len(chunks), batch):
            part = chunks[start : start + batch]
            parts.append(embedder.embed([embedding_text(c) for c in part]))
            bar.update(len(part))
    return np.vstack(parts)


def chunk(config: RetroConfig, embedder: Embedder, document: Document) -> list[Chunk]:
    return list(chunk_document(
        document,
        embedder.tokenizer,
        max_tokens=min(config.retrieval.chunking.max_tokens, embedder.max_tokens),
        overlap_tokens=config.retrieval.chunking.overlap_tokens,
    ))


def apply_documents(
    writer: IndexWriter, config: RetroConfig, embedder: Embedder, documents: Iterable[Document], *,
    source: str, delete: Sequence[str] = (), progress: bool = False, report: IngestReport | None = None,
) -> IngestReport:
    """Write `documents` (each replacing its previous chunks) and remove `delete` in `writer`.
    Unchanged documents are skipped; a chunk whose text is already in the index, or earlier in
    this batch, is dropped."""
    report = report or IngestReport()
    documents = list(documents)
    _check(config, documents)
    changed: list[tuple[Document, DocumentEntry]] = []
    for document in documents:
        entry = DocumentEntry(document.domain, source, content_hash(_identity(document)), 0, document.tenant)
        old = writer.manifest.documents.get(document.id)
        if old is not None and (old.sha256, old.domain, old.tenant, old.source) == (entry.sha256, entry.domain, entry.tenant, source):
            report.unchanged += 1
            continue
        changed.append((document, entry))
        if old is None:
            report.added += 1
        else:
            report.replaced += 1

    per_doc: dict[str, list[Chunk]] = defaultdict(list)
    if changed:
        replaced = {d.id for d, _ in changed}
        seen = {content_hash(c.text) for c in writer.store.chunks() if c.doc_id not in replaced}
        for document, entry in changed:
            for piece in chunk(config, embedder, document):
                digest = content_hash(piece.text)
                if digest in seen:
                    report.duplicate_chunks += 1
                    continue
                seen.add(digest)
                per_doc[document.id].append(piece)
            entry.chunks = len(per_doc[document.id])
    ordered = [c for document, _ in changed for c in per_doc[document.id]]
    vectors = embed_chunks(embedder, ordered, progress=progress)
    offset = 0
    for document, entry in changed:
        pieces = per_doc[document.id]
        writer.upsert(document.id, entry, pieces, vectors[offset : offset + len(pieces)])
        offset += len(pieces)
    report.chunks += len(ordered)

    known = [d for d in delete if d in writer.manifest.documents]
    report.missing.extend(d for d in delete if d not in writer.manifest.documents)
    report.deleted += len(known)
    report.deleted_chunks += writer.delete(known)
    if report.duplicate_chunks:
        logger.info("dropped %d duplicate chunks", report.duplicate_chunks)
    return report


def _identity(document: Document) -> str:
    # Everything that ends up in a chunk: a changed title or URL is a changed document.
    import json

    return json.dumps([document.text, document.title, document.url, document.metadata], sort_keys=True, default=str)


def _check(config: RetroConfig, documents: list[Document]) -> None:
    known = set(config.domain_names)
    ids: set[str] = set()
    for document in documents:
        if document.domain not in known:
            raise IngestError(f"unknown domain {document.domain!r}; configured: {', '.join(sorted(known))}")
        if document.id in ids:
            raise IngestError(f"document id {document.id!r} appears twice in one batch")
        ids.add(document.id)


def ingest(
    config: RetroConfig, embedder: Embedder, documents: Iterable[Document], *, delete: Sequence[str] = (),
    progress: bool = True,
) -> IngestReport:
    """Add or replace user documents and delete others, as one new index version."""
    ensure_index(config, embedder, progress=progress)
    with IndexWriter(config, dimension=embedder.dimension, embedder_id=embedder_id(embedder)) as writer:
        report = apply_documents(writer, config, embedder, documents, source=SOURCE_INGEST, delete=delete,
                                 progress=progress)
        if report.added or report.replaced or report.deleted:
            report.version = writer.commit()
        else:
            report.version = writer.base
    return report


def build_index(config: RetroConfig, embedder: Embedder, *, progress: bool = True) -> IndexVersion:
    """Bring the index in line with the configured corpus: a new version, ingested documents kept."""
    eid = embedder_id(embedder)
    root = index_root(config)
    base = current_version(root)
    fresh = base is not None and (base.backend != config.retrieval.backend or base.embedder != eid)
    with IndexWriter(config, dimension=embedder.dimension, embedder_id=eid, fresh=fresh) as writer:
        if fresh:
            logger.info("index: backend or embedder changed (%s, %s -> %s, %s): building anew",
                        base.backend, base.embedder, config.retrieval.backend, eid)
            old = read_manifest(root, base)
            kept = old.ids(SOURCE_INGEST)
            if kept:
                previous = open_store(config, base, embedder.dimension)
                try:
                    writer.carry_over(previous, old, kept, lambda chunks: embed_chunks(embedder, chunks))
                finally:
                    previous.close()
        documents = [
            document
            for domain in config.domains
            for document in read_documents(domain.corpus, domain=domain.name)
        ]
        present = {d.id for d in documents}
        gone = [d for d in writer.manifest.ids(SOURCE_CONFIG) if d not in present]
        # A config document that reuses an ingested document's id takes its place.
        apply_documents(writer, config, embedder, documents, source=SOURCE_CONFIG, delete=gone, progress=progress)
        writer.config_fingerprint = corpus_fingerprint(config)
        return writer.commit()


def ensure_index(config: RetroConfig, embedder: Embedder, *, progress: bool = True) -> IndexVersion:
    """The current version if it was built from exactly this corpus, backend and embedder;
    else a new one."""
    version = current_version(index_root(config))
    if (
        version is not None
        and version.backend == config.retrieval.backend
        and version.embedder == embedder_id(embedder)
        and version.config_fingerprint == corpus_fingerprint(config)
    ):
        return version
    return build_index(config, embedder, progress=progress)


__all__ = ["IngestError", "IngestReport", "apply_documents", "build_index", "embed_chunks", "embedding_text",
           "ensure_index", "ingest"]
