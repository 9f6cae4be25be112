"""What the routes share, built once per API-server process in `init_state`."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from retro_vllm.config import RetroConfig, load_config
from retro_vllm.retrieval.embedder import Embedder
from retro_vllm.retrieval.ingest import ensure_index
from retro_vllm.retrieval.retriever import Retriever

logger = logging.getLogger(__name__)


@dataclass
class RetroState:
    config: RetroConfig
    retriever: Retriever

    @classmethod
    def from_config(cls, config: RetroConfig | None = None) -> "RetroState":
        config = config or load_config()
        import torch

        torch.set_num_threads(config.embedder.serving_threads)
        embedder = Embedder(config.embedder.path, batch_size=config.embedder.batch_size)
        # Stock `vllm serve` has no build step of its own: build here if needed.
        version = ensure_index(config, embedder, progress=True)
        embedder.embed_query("warm-up")  # first call pays model load; keep it out of requests
        logger.info("retro: serving index %s from %s", version.name, config.home_dir)
        return cls(config=config, retriever=Retriever(config, embedder, version))

    def preamble(self, domain: str | None) -> str:
        section = self.config.domain(domain) if domain else None
        return (section.preamble if section and section.preamble else None) or self.config.serving.preamble
