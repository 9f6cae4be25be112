"""Versioned on-disk indexes: every build writes a new version folder, then swaps a
pointer file atomically, so readers only ever see a complete index."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from retro_vllm.config import RetroConfig
from retro_vllm.fsutil import folder_lock, replace_text
from retro_vllm.retrieval.stores.base import StoreError
from retro_vllm.retrieval.stores.faiss import FaissStore

logger = logging.getLogger(__name__)

CURRENT = "CURRENT"
BUILD_INFO = "build.json"


class IndexUnavailableError(RuntimeError):
    pass


@dataclass(frozen=True)
class IndexVersion:
    name: str
    folder: Path
    fingerprint: str


def index_root(config: RetroConfig) -> Path:
    return config.home_dir / "index"


def corpus_fingerprint(config: RetroConfig, embedder_path: Path) -> str:
    """Changes whenever what the index is built from changes: corpus bytes, domains,
    chunking and the embedder."""
    from retro_vllm.retrieval.corpus import iter_files

    digest = hashlib.sha256()
    digest.update(json.dumps(config.retrieval.chunking.model_dump(), sort_keys=True).encode())
    digest.update(str(embedder_path).encode())
    for domain in config.domains:
        digest.update(f"\0domain:{domain.name}".encode())
        for path in iter_files(domain.corpus):
            digest.update(f"\0file:{path.name}:".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def current_version(root: Path) -> IndexVersion | None:
    try:
        name = (root / CURRENT).read_text().strip()
    except FileNotFoundError:
        return None
    folder = root / "versions" / name
    try:
        info = json.loads((folder / BUILD_INFO).read_text())
    except (OSError, ValueError) as exc:
        raise IndexUnavailableError(f"index version {name} under {root} is missing or corrupt ({exc})") from None
    return IndexVersion(name=name, folder=folder, fingerprint=str(info.get("fingerprint", "")))


def open_version(version: IndexVersion) -> FaissStore:
    try:
        return FaissStore.load(version.folder)
    except StoreError as exc:
        raise IndexUnavailableError(str(exc)) from None


def publish(root: Path, store: FaissStore, *, fingerprint: str, keep: int = 3) -> IndexVersion:
    """Write `store` as a new version and make it current. A crash at any point leaves the
    previous version current and intact."""
    versions = root / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    with folder_lock(root):
        for stale in versions.glob(".build-*"):  # left by a builder that was killed
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=".build-", dir=versions))
        try:
            store.save(staging)
            (staging / BUILD_INFO).write_text(json.dumps({"fingerprint": fingerprint, "count": store.count()}))
            existing = sorted(p.name for p in versions.iterdir() if p.name.startswith("v"))
            name = f"v{(int(existing[-1][1:]) + 1) if existing else 1:06d}"
            staging.rename(versions / name)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        replace_text(root / CURRENT, name + "\n")
        _prune(versions, keep=keep, current=name)
    logger.info("index version %s published under %s (%d chunks)", name, root, store.count())
    return IndexVersion(name=name, folder=versions / name, fingerprint=fingerprint)


def _prune(versions: Path, *, keep: int, current: str) -> None:
    names = sorted(p.name for p in versions.iterdir() if p.name.startswith("v"))
    for name in names[:-keep]:
        if name != current:
            shutil.rmtree(versions / name, ignore_errors=True)
