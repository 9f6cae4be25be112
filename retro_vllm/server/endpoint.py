"""The `vllm.endpoint_plugins` entry: routes on vLLM's API server and their shared state."""

from __future__ import annotations

import logging
from argparse import Namespace

from fastapi import APIRouter, FastAPI, Request

from retro_vllm.server import chat

logger = logging.getLogger(__name__)


class RetroEndpointPlugin:
    name = "retro"
    required_tasks = ("generate",)

    def attach_router(self, app: FastAPI) -> None:
        router = APIRouter()

        @router.post("/v1/chat/completions")
        async def create_chat_completion(raw_request: Request):
            return await chat.create_chat_completion(raw_request)

        app.include_router(router)

    async def init_state(self, engine_client, state, args: Namespace) -> None:
        from retro_vllm.server.state import RetroState

        if engine_client is None:
            logger.warning("retro: no engine in this server (render-only); retrieval routes answer 501")
        state.retro = RetroState.from_config()
