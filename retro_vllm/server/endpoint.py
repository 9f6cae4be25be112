"""The `vllm.endpoint_plugins` entry: routes on vLLM's API server and their shared state."""

from __future__ import annotations

import logging
from argparse import Namespace

from fastapi import APIRouter, FastAPI

from retro_vllm.server import catalog, chat, completions, documents

logger = logging.getLogger(__name__)


class RetroEndpointPlugin:
    name = "retro"
    required_tasks = ("generate",)

    def attach_router(self, app: FastAPI) -> None:
        router = APIRouter()
        for method, path, handler in (
            ("POST", "/v1/chat/completions", chat.create_chat_completion),
            ("POST", "/v1/completions", completions.create_completion),
            ("GET", "/v1/models", catalog.list_models),
            ("GET", "/v1/retro/domains", catalog.list_domains),
            ("POST", "/v1/retro/search", catalog.search),
            ("POST", "/v1/retro/documents", documents.add_documents),
            ("DELETE", "/v1/retro/documents/{doc_id:path}", documents.delete_document),
            # Adapters come from the registry (checked) on first use; vLLM's own load/unload
            # routes would take any path, so they stay closed.
            ("POST", "/v1/load_lora_adapter", catalog.adapter_management_closed),
            ("POST", "/v1/unload_lora_adapter", catalog.adapter_management_closed),
        ):
            router.add_api_route(path, handler, methods=[method])
        app.include_router(router)

    async def init_state(self, engine_client, state, args: Namespace) -> None:
        from retro_vllm.rag.state import RetroState

        if engine_client is None:
            logger.warning("retro: no engine in this server (render-only)")
        from retro_vllm.compat import serving as vllm_serving

        model_config = engine_client.model_config if engine_client is not None else None
        max_model_len = model_config.max_model_len if model_config is not None else None
        prompt_embeds = None
        if model_config is not None and getattr(model_config, "enable_prompt_embeds", False):
            prompt_embeds = (model_config.get_hidden_size(), model_config.dtype)
        state.retro = RetroState.from_config(
            model_path=getattr(args, "tokenizer", None) or args.model,
            max_model_len=max_model_len,
            served_name=vllm_serving.base_model_name(state),
            max_lora_rank=args.max_lora_rank if getattr(args, "enable_lora", False) else None,
            prompt_embeds=prompt_embeds,
        )
        if state.retro.prompt_adapters is not None:
            from retro_vllm.rag import prompt_adapters

            prompt_adapters.install(state)
        if state.retro.catalog is not None:
            from retro_vllm.adapters.resolver import register_resolver

            register_resolver().catalog = state.retro.catalog
