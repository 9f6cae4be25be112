"""Prompt-tuning adapters on the chat and completions routes.

The client sends plain text. The route renders the prompt as for a LoRA (preamble, passages,
conversation) and names the base model to vLLM, so vLLM is never given a LoRA for it. vLLM's
own handler then renders and tokenizes the request as always; between that and the engine,
the soft prompt goes in front of every prompt (`SoftPrompt.engine_input`), as peft's forward
puts it. That seam is the handler's render method, wrapped once per process
(`retro_vllm.compat.renderers`); the adapter for
the request in flight travels in a context variable, which asyncio copies into the handler's
task, so concurrent requests never see each other's adapter.

Why not vLLM's public inputs: the chat content part `{"type": "prompt_embeds"}` lands inside a
message, after the chat template's own tokens, not before the whole input as peft trained it;
`/v1/completions`' `prompt_embeds` field would need the API server to hold the model's
embedding table and to re-tokenize what vLLM tokenizes anyway.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from contextvars import ContextVar
from typing import Any

import torch

from retro_vllm.adapters.methods import METHODS
from retro_vllm.adapters.methods.prompt import PromptAdapterError, SoftPrompt
from retro_vllm.adapters.registry import AdapterManifest
from retro_vllm.compat import renderers
from retro_vllm.rag.errors import RetroHTTPError

logger = logging.getLogger(__name__)

# vLLM zeroes the token ids at embedding positions itself (v1/request.py); the same here.
VIRTUAL_TOKEN_ID = 0
_CACHE_SIZE = 64

_ACTIVE: ContextVar[SoftPrompt | None] = ContextVar("retro_soft_prompt", default=None)


def is_prompt_adapter(manifest: AdapterManifest | None) -> bool:
    return manifest is not None and METHODS[manifest.type].served_as == "prompt_embeds"


class PromptAdapters:
    """Soft prompts by versioned name, read from the registry on first use, in the engine's
    dtype. Only the soft prompts are held (n x hidden each), never the embedding table."""

    def __init__(self, registry, *, hidden_size: int, dtype: torch.dtype):
        self.registry = registry
        self.hidden_size = hidden_size
        self.dtype = dtype
        self._loaded: OrderedDict[str, SoftPrompt] = OrderedDict()
        self._lock = threading.Lock()

    def soft_prompt(self, manifest: AdapterManifest) -> SoftPrompt:
        """Raises RetroHTTPError 400 for an adapter that cannot serve on this model."""
        name = manifest.served_name  # versions never change in place: the name is the key
        with self._lock:
            if name in self._loaded:
                self._loaded.move_to_end(name)
                return self._loaded[name]
        try:
            soft = SoftPrompt.load(self.registry.folder(manifest.name, manifest.version),
                                   hidden_size=self.hidden_size, dtype=self.dtype)
        except PromptAdapterError as exc:
            raise RetroHTTPError(400, f"adapter {name}: {exc}", code="adapter_rejected", param="model") from None
        with self._lock:
            self._loaded[name] = soft
            while len(self._loaded) > _CACHE_SIZE:
                self._loaded.popitem(last=False)
        return soft


def refuse_client_embeds(state, body: dict[str, Any], soft: SoftPrompt | None) -> None:
    """Raw embeddings from clients: refused when the engine's flag is on only for retro's
    prompt adapters (`adapters.prompt_embeds`), and always beside a prompt adapter."""
    if not _sends_embeds(body):
        return
    if soft is not None:
        raise RetroHTTPError(400, "prompt_embeds cannot be combined with a prompt-tuning adapter",
                             code="invalid_request", param="prompt_embeds")
    if state.config.adapters.prompt_embeds:
        raise RetroHTTPError(
            400, "this server accepts prompt embeddings only from its own prompt-tuning adapters; send text",
            code="prompt_embeds_not_accepted", param="prompt_embeds",
        )


def _sends_embeds(body: dict[str, Any]) -> bool:
    if body.get("prompt_embeds") is not None:
        return True
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(isinstance(p, dict) and p.get("type") == "prompt_embeds" for p in content):
            return True
    return False


class active:
    """`with active(soft): await handler...`: the requests vLLM renders inside get `soft`."""

    def __init__(self, soft: SoftPrompt | None):
        self.soft = soft

    def __enter__(self):
        self._token = _ACTIVE.set(self.soft)

    def __exit__(self, *exc):
        _ACTIVE.reset(self._token)


def install(app_state) -> None:
    """Put the active soft prompt in front of every prompt the handlers render (idempotent)."""
    renderers.wrap_render_steps(app_state, _with_active_soft_prompt)


def _with_active_soft_prompt(engine_input: dict[str, Any]) -> dict[str, Any]:
    soft = _ACTIVE.get()
    return engine_input if soft is None else _with_soft_prompt(soft, engine_input)


def _with_soft_prompt(soft: SoftPrompt, engine_input: dict[str, Any]) -> dict[str, Any]:
    if engine_input.get("type") != "token":  # the routes refuse embeds and media beforehand
        raise ValueError("a prompt-tuning adapter needs a text or token prompt")
    options = {k: engine_input[k] for k in ("prompt", "cache_salt", "arrival_time") if k in engine_input}
    return soft.engine_input(engine_input["prompt_token_ids"], placeholder_id=VIRTUAL_TOKEN_ID, **options)
