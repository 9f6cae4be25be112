"""The `vllm.endpoint_plugins` entry: routes on vLLM's API server and their shared state."""

from __future__ import annotations

import logging
from argparse import Namespace

from fastapi import APIRouter, FastAPI, Request

from retro_vllm.server import catalog, chat, completions

logger = logging.getLogger(__name__)


class RetroEndpointPlugin:
    name = "retro"
    required_tasks = ("generate",)

    def attach_router(self, app: FastAPI) -> None:
        router = APIRouter()

        @router.post("/v1/chat/completions")
        async def create_chat_completion(raw_request: Request):
            return await chat.create_chat_completion(raw_request)

        @router.post("/v1/completions")
        async def create_completion(raw_request: Request):
            return await completions.create_completion(raw_request)

        @router.get("/v1/models")
        async def list_models(raw_request: Request):
            return await catalog.list_models(raw_request)

        @router.get("/v1/retro/domains")
        async def list_domains(raw_request: Request):
            return await catalog.list_domains(raw_request)

        @router.post("/v1/retro/search")
        async def search(raw_request: Request):
            return await catalog.search(raw_request)

        app.include_router(router)

    async def init_state(self, engine_client, state, args: Namespace) -> None:
        from retro_vllm.server.state import RetroState

        if engine_client is None:
            logger.warning("retro: no engine in this server (render-only)")
        max_model_len = engine_client.model_config.max_model_len if engine_client is not None else None
        state.retro = RetroState.from_config(
            model_path=getattr(args, "tokenizer", None) or args.model, max_model_len=max_model_len
        )
