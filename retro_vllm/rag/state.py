"""What the routes share, built once per API-server process in `init_state`."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from retro_vllm.adapters.catalog import AdapterCatalog
from retro_vllm.adapters.registry import AdapterRegistry
from retro_vllm.config import RetroConfig, load_config
from retro_vllm.prepare import seed_adapters
from retro_vllm.retrieval.ingest import ensure_index
from retro_vllm.retrieval.onnx_embedder import serving_embedder
from retro_vllm.retrieval.retriever import Retriever
from retro_vllm.routing.router import DomainRouter
from retro_vllm.routing.training import ensure_router

logger = logging.getLogger(__name__)


@dataclass
class RetroState:
    config: RetroConfig
    retriever: Retriever
    router: DomainRouter | None = None
    catalog: AdapterCatalog | None = None  # None: LoRA is off on this server
    tokenizer: Any = None  # the served model's, for fitting passages into the context
    max_model_len: int | None = None
    prompt_adapters: Any = None  # PromptAdapters; None: the engine takes no prompt embeddings

    async def soft_prompt(self, route):
        """The soft prompt of the route's prompt-tuning adapter, or None (LoRA, or no adapter).
        Only a prompt adapter goes to a worker thread (its first use reads the adapter's file):
        every other request stays off the thread hop, on the TTFT path."""
        from retro_vllm.rag.prompt_adapters import is_prompt_adapter

        if self.prompt_adapters is None or not is_prompt_adapter(route.manifest):
            return None
        return await asyncio.to_thread(self.prompt_adapters.soft_prompt, route.manifest)

    @classmethod
    def from_config(cls, config: RetroConfig | None = None, *, model_path: str | None = None,
                    max_model_len: int | None = None, served_name: str | None = None,
                    max_lora_rank: int | None = None, prompt_embeds: tuple[int, Any] | None = None) -> "RetroState":
        """`max_lora_rank` None means the server runs without LoRA: no adapters are served.
        `prompt_embeds`: (hidden size, dtype) of an engine that takes prompt embeddings, which
        serves prompt-tuning adapters from the same registry."""
        config = config or load_config()
        import torch

        torch.set_num_threads(config.embedder.serving_threads)
        embedder = serving_embedder(config)
        # `retro-vllm serve` prepared the index and the shipped adapters before vLLM started
        # (retro_vllm.prepare): here they are only opened. Stock `vllm serve` (with --plugin retro or
        # VLLM_PLUGINS=retro) has no build step of its own, so the same steps build what is missing.
        version = ensure_index(config, embedder, progress=True)
        embedder.embed_query("warm-up")  # first call pays model load; keep it out of requests
        tokenizer = None
        if model_path:
            from transformers import AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(model_path)
            except Exception as exc:  # a remote-only tokenizer etc.: serve on, without fitting
                logger.warning("retro: no tokenizer from %s (%s); passages are not fitted to the context", model_path, exc)
        retriever = Retriever(config, embedder, version)
        router = ensure_router(config, embedder, retriever.store, version)
        logger.info("retro: serving index %s from %s", version.name, config.home_dir)
        catalog = None
        if config.adapters.enabled and max_lora_rank is not None:
            registry = AdapterRegistry(config.registry_dir)
            seed_adapters(config, notify=lambda message: logger.info("retro: %s", message))
            catalog = AdapterCatalog(registry, base_model=served_name or config.model.name, max_rank=max_lora_rank)
        prompt_adapters = None
        if catalog is not None and prompt_embeds is not None:
            from retro_vllm.rag.prompt_adapters import PromptAdapters

            hidden_size, dtype = prompt_embeds
            prompt_adapters = PromptAdapters(catalog.registry, hidden_size=hidden_size, dtype=dtype)
        return cls(config=config, retriever=retriever, router=router, catalog=catalog, tokenizer=tokenizer,
                   max_model_len=max_model_len, prompt_adapters=prompt_adapters)

    def preamble(self, domain: str | None) -> str:
        section = self.config.domain(domain) if domain else None
        return (section.preamble if section and section.preamble else None) or self.config.serving.preamble

    def bias(self, domain: str | None) -> float:
        section = self.config.domain(domain) if domain else None
        return section.bias if section and section.bias is not None else self.config.decoding.bias

    def count_chat_tokens(self, messages: list[dict]) -> int:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_text_tokens(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])

    def prompt_budget(self, reserve: int) -> int | None:
        if self.tokenizer is None or not self.max_model_len:
            return None
        return max(self.max_model_len - reserve, 0)
