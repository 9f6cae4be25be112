"""Build the router from the index (each domain's chunk vectors) and labelled queries."""

from __future__ import annotations

import hashlib
import json
import logging
from itertools import islice
from pathlib import Path

import numpy as np

from retro_vllm.config import RetroConfig
from retro_vllm.retrieval.embedder import Embedder
from retro_vllm.retrieval.index import IndexVersion
from retro_vllm.retrieval.stores.base import VectorStore
from retro_vllm.routing.router import INFO_FILE, DomainRouter, add_to_sums

logger = logging.getLogger(__name__)

TRAINING_BATCH = 4096
"""Chunks whose vectors are read at a time while training."""


def router_dir(config: RetroConfig) -> Path:
    return config.home_dir / "router"


def labelled_queries(config: RetroConfig) -> list[tuple[str, str]]:
    pairs = []
    for domain in config.domains:
        for path in domain.queries:
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    pairs.append((json.loads(line)["question"], domain.name))
    return pairs


def _fingerprint(config: RetroConfig, version: IndexVersion) -> str:
    # Any new version (an ingest, a config corpus edit) may move the domain centroids.
    digest = hashlib.sha256(f"{version.name}:{version.backend}:{version.config_fingerprint}".encode())
    digest.update(f"{config.routing.threshold}:{config.routing.temperature}".encode())
    for domain in config.domains:
        for path in domain.queries:
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def ensure_router(config: RetroConfig, embedder: Embedder, store: VectorStore, version: IndexVersion) -> DomainRouter | None:
    """The saved router if it was trained on exactly this index and these queries, else a
    new one. None when fewer than two domains have passages (nothing to choose)."""
    fingerprint = _fingerprint(config, version)
    folder = router_dir(config)
    if (folder / INFO_FILE).is_file():
        router = DomainRouter.load(folder)
        if router.fingerprint == fingerprint:
            return router
    # A batch of chunks at a time: the whole store's vectors and payloads at once cost a
    # 100k-chunk server about 330 MB of peak memory at start-up.
    sums: dict[str, np.ndarray] = {}
    examples = 0
    chunks = store.chunks()
    while batch := list(islice(chunks, TRAINING_BATCH)):
        add_to_sums(sums, store.vectors([c.id for c in batch]), [c.domain for c in batch])
        examples += len(batch)
    queries = labelled_queries(config)
    if queries:
        add_to_sums(sums, embedder.embed([q for q, _ in queries]), [d for _, d in queries])
        examples += len(queries)
    if len(sums) < 2:
        logger.info("router: fewer than two domains with passages; routing is off")
        return None
    router = DomainRouter.from_sums(sums, threshold=config.routing.threshold,
                                    temperature=config.routing.temperature, fingerprint=fingerprint)
    router.save(folder)
    logger.info("router: trained on %d examples over %d domains", examples, len(router.domains))
    return router
