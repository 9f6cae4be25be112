"""Index versions: what the server reads is always complete.

Embedded backends (FAISS, Qdrant Edge) keep each version in its own folder
(`<home>/index/versions/vNNNNNN/`: the store, the BM25 sidecar, the document manifest).
A writer copies the current version into a private staging folder, changes the copy, then
renames it into place and swaps the `CURRENT` pointer file. A writer killed at any point
leaves the previous version current and intact; the next writer removes its staging folder.
Server backends (Qdrant, Weaviate) are written in place, document by document; `CURRENT`
then only counts versions, so caches still notice writes made by this machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from retro_vllm.config import RetroConfig
from retro_vllm.fsutil import folder_lock, replace_text
from retro_vllm.retrieval.stores import connect_server_store, embedded_store_class, is_embedded, store_options
from retro_vllm.retrieval.stores.base import StoreError, VectorStore
from retro_vllm.retrieval.stores.embedded import copy_folder
from retro_vllm.retrieval.types import Chunk

logger = logging.getLogger(__name__)

CURRENT = "CURRENT"
BUILD_INFO = "build.json"
MANIFEST = "documents.json"
STORE_DIR = "store"
KEYWORD_DIR = "bm25"
SERVER_MANIFEST = "server-documents.json"

SOURCE_CONFIG = "config"  # documents listed in the configuration's `corpus`
SOURCE_INGEST = "ingest"  # documents added with `retro-vllm index` or POST /v1/retro/documents


class IndexUnavailableError(RuntimeError):
    pass


@dataclass(frozen=True)
class IndexVersion:
    name: str
    folder: Path | None  # None for a server backend
    backend: str
    embedder: str
    config_fingerprint: str

    @property
    def embedded(self) -> bool:
        return self.folder is not None


@dataclass
class DocumentEntry:
    domain: str
    source: str
    sha256: str
    chunks: int
    tenant: str | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class Manifest:
    """Every document in a version: where it came from and its content hash, so an unchanged
    document is not embedded again and a config corpus edit removes exactly what it dropped."""

    documents: dict[str, DocumentEntry] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> "Manifest":
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            raise IndexUnavailableError(f"document manifest {path} is corrupt: {exc}") from None
        return cls({doc_id: DocumentEntry(**entry) for doc_id, entry in raw.get("documents", {}).items()})

    def write(self, path: Path) -> None:
        replace_text(path, json.dumps({"documents": {k: v.to_json() for k, v in sorted(self.documents.items())}}))

    def ids(self, source: str | None = None) -> set[str]:
        return {k for k, v in self.documents.items() if source is None or v.source == source}


def read_manifest(root: Path, version: IndexVersion) -> Manifest:
    """The document manifest of `version`: in its folder, or beside CURRENT for a server backend."""
    return Manifest.read(version.folder / MANIFEST if version.embedded else root / SERVER_MANIFEST)


def index_root(config: RetroConfig) -> Path:
    return config.home_dir / "index"


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def corpus_fingerprint(config: RetroConfig) -> str:
    """Changes whenever the configured corpus or its chunking changes."""
    from retro_vllm.retrieval.corpus import iter_files

    digest = hashlib.sha256()
    digest.update(json.dumps(config.retrieval.chunking.model_dump(), sort_keys=True).encode())
    for domain in config.domains:
        digest.update(f"\0domain:{domain.name}".encode())
        for path, root in iter_files(domain.corpus):
            digest.update(f"\0file:{path.relative_to(root)}:".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def current_version(root: Path) -> IndexVersion | None:
    try:
        name = (root / CURRENT).read_text().strip()
    except FileNotFoundError:
        return None
    folder = root / "versions" / name
    info_path = folder / BUILD_INFO if not name.startswith("s") else root / BUILD_INFO
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as exc:
        raise IndexUnavailableError(f"index version {name} under {root} is missing or corrupt ({exc})") from None
    return IndexVersion(
        name=name,
        folder=folder if not name.startswith("s") else None,
        backend=str(info.get("backend", "faiss")),
        embedder=str(info.get("embedder", "")),
        config_fingerprint=str(info.get("config_fingerprint", "")),
    )


def open_store(config: RetroConfig, version: IndexVersion, dimension: int | Callable[[], int] | None) -> VectorStore:
    """The store of `version` opened for reading (embedded) or connected (server). `dimension` is
    needed only to connect to a server store; an embedded one reads its own. Give it as a callable
    when learning it is costly (a sentence-transformers embedder loads torch and the model)."""
    try:
        if version.embedded:
            cls = embedded_store_class(version.backend)
            options = store_options(config.retrieval) if version.backend == config.retrieval.backend else {}
            return cls.open(version.folder / STORE_DIR, **options)
        if dimension is None:
            raise IndexUnavailableError(f"connecting to the {version.backend} server needs the embedding dimension")
        return connect_server_store(config.retrieval, dimension() if callable(dimension) else dimension)
    except StoreError as exc:
        raise IndexUnavailableError(str(exc)) from None


class IndexWriter:
    """One batch of changes that becomes one new version (embedded) or is applied in place
    (server). Use as a context manager; changes take effect at `commit()` (embedded) and a
    writer left without commit changes nothing."""

    def __init__(self, config: RetroConfig, *, dimension: int, embedder_id: str, fresh: bool = False):
        self.config = config
        self.root = index_root(config)
        self.dimension = dimension
        self.embedder_id = embedder_id
        self.backend = config.retrieval.backend
        self.fresh = fresh  # True: start from an empty store, not from a copy of the current version
        self.embedded = is_embedded(self.backend)
        self._lock = None
        self._staging: Path | None = None
        self.store: VectorStore | None = None
        self.manifest = Manifest()
        self.base: IndexVersion | None = None
        self.config_fingerprint = ""

    # -- lifecycle ----------------------------------------------------------------
    def __enter__(self) -> "IndexWriter":
        self._lock = folder_lock(self.root)
        self._lock.__enter__()
        try:
            self._open()
        except BaseException:
            self._release(discard=True)
            raise
        return self

    def __exit__(self, exc_type, *_exc) -> None:
        self._release(discard=True)

    def _open(self) -> None:
        versions = self.root / "versions"
        for stale in versions.glob(".build-*") if versions.is_dir() else ():
            shutil.rmtree(stale, ignore_errors=True)  # left by a writer that was killed
        self.base = current_version(self.root)
        reuse = (
            not self.fresh
            and self.base is not None
            and self.base.backend == self.backend
            and self.base.embedder == self.embedder_id
        )
        if self.base is not None:
            self.config_fingerprint = self.base.config_fingerprint if reuse else ""
        if self.embedded:
            versions.mkdir(parents=True, exist_ok=True)
            self._staging = Path(tempfile.mkdtemp(prefix=".build-", dir=versions))
            cls = embedded_store_class(self.backend)
            options = store_options(self.config.retrieval)
            if reuse:
                copy_folder(self.base.folder / STORE_DIR, self._staging / STORE_DIR)
                self.store = cls.open(self._staging / STORE_DIR, **options)
            else:
                self.store = cls.create(self._staging / STORE_DIR, self.dimension, **options)
        else:
            self.store = connect_server_store(self.config.retrieval, self.dimension)
        if reuse:
            self.manifest = read_manifest(self.root, self.base)

    def _release(self, *, discard: bool) -> None:
        if self.store is not None:
            try:
                self.store.close()
            except Exception:  # closing a store we are throwing away must not mask the real error
                logger.debug("closing the staging store failed", exc_info=True)
            self.store = None
        if discard and self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
        if self._lock is not None:
            self._lock.__exit__(None, None, None)
            self._lock = None

    # -- changes ------------------------------------------------------------------
    def upsert(self, doc_id: str, entry: DocumentEntry, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        """Replace every chunk of `doc_id` with `chunks` (which may be empty)."""
        if doc_id in self.manifest.documents:
            self.store.delete(doc_ids=[doc_id])
        if len(chunks):
            self.store.upsert(chunks, vectors)
        self.manifest.documents[doc_id] = entry

    def delete(self, doc_ids: Iterable[str]) -> int:
        ids = [d for d in doc_ids if d in self.manifest.documents]
        removed = self.store.delete(doc_ids=ids) if ids else 0
        for doc_id in ids:
            del self.manifest.documents[doc_id]
        return removed

    def carry_over(self, previous: VectorStore, old: Manifest, doc_ids: set[str], embed) -> None:
        """Copy documents from another version (its store and manifest; a backend or embedder
        change): vectors are reused when the embedder is the same, else the chunk texts are
        embedded again."""
        same_embedder = self.base is not None and self.base.embedder == self.embedder_id
        for doc_id in sorted(doc_ids):
            chunks = list(previous.chunks({"doc_id": doc_id}))
            if chunks:
                vectors = previous.vectors([c.id for c in chunks]) if same_embedder else embed(chunks)
                self.store.upsert(chunks, vectors)
            self.manifest.documents[doc_id] = old.documents[doc_id]

    def commit(self) -> IndexVersion:
        info = {
            "backend": self.backend,
            "embedder": self.embedder_id,
            "config_fingerprint": self.config_fingerprint,
            "count": self.store.count(),
            "documents": len(self.manifest.documents),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if not self.embedded:
            return self._commit_server(info)
        from retro_vllm.retrieval.keyword import KeywordIndex

        self.store.flush()
        KeywordIndex.write(self.store.chunks(), self._staging / KEYWORD_DIR)
        self.manifest.write(self._staging / MANIFEST)
        (self._staging / BUILD_INFO).write_text(json.dumps(info, indent=2))
        self.store.close()
        self.store = None
        versions = self.root / "versions"
        existing = sorted(p.name for p in versions.iterdir() if p.name.startswith("v"))
        name = f"v{(int(existing[-1][1:]) + 1) if existing else 1:06d}"
        self._staging.rename(versions / name)
        self._staging = None
        replace_text(self.root / CURRENT, name + "\n")
        _prune(versions, keep=3, current=name)
        logger.info("index version %s published (%d chunks, %d documents)", name, info["count"], info["documents"])
        return current_version(self.root)

    def _commit_server(self, info: dict) -> IndexVersion:
        self.manifest.write(self.root / SERVER_MANIFEST)
        replace_text(self.root / BUILD_INFO, json.dumps(info, indent=2))
        previous = self.base.name if self.base is not None and not self.base.embedded else "s000000"
        name = f"s{int(previous[1:]) + 1:06d}"
        replace_text(self.root / CURRENT, name + "\n")
        return current_version(self.root)


def _prune(versions: Path, *, keep: int, current: str) -> None:
    # A reader that opened an older version keeps its files open: FAISS reads its index into
    # memory and keeps its payload database open, Qdrant Edge maps its files, so removing the
    # folder does not pull data from under it.
    names = sorted(p.name for p in versions.iterdir() if p.name.startswith("v"))
    for name in names[:-keep]:
        if name != current:
            shutil.rmtree(versions / name, ignore_errors=True)
