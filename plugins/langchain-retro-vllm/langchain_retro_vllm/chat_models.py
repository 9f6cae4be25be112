"""`ChatRetroVLLM`: `ChatOpenAI` pointed at a retro-vllm server, keeping what it returns.

`ChatOpenAI` drops the `annotations` and the unknown `retro` object of a retro-vllm answer.
This class puts them in `AIMessage.response_metadata`:

- `citations`: one dict per `[n]` marker: `url`, `title`, `start_index`, `end_index` (offsets
  into the message text) and, when known, the cited passage's `id`, `domain` and `rank`;
- `annotations`: the raw OpenAI `url_citation` list;
- `retro`: the server's whole `retro` object; `domain`, `adapter` and `passages` from it.

In a stream the same keys arrive once, on the final chunk, so a summed `AIMessageChunk` carries
them exactly once. Per-call controls (`domain`, `top_k`, `retrieval`, `filters`, `bias`) go in
the request's `retro` object; set them on the model or pass them to `invoke`/`stream`.

Async calls keep one connection pool per event loop (see `LoopBoundTransport`), so one model
serves several `asyncio.run(...)` calls in a row.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import urllib.request
from typing import Any

import openai
from langchain_core.language_models import LanguageModelInput
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_openai import ChatOpenAI
from pydantic import Field, SecretStr, model_validator

try:  # the httpx flavour the installed openai SDK takes (httpx2 for openai>=3)
    from langchain_openai._compat import httpx
except ImportError:  # older langchain-openai: openai<3, plain httpx
    import httpx

try:  # the TCP keepalive options and pool limits ChatOpenAI's own default client uses
    from langchain_openai.chat_models._client_utils import _DEFAULT_CONNECTION_LIMITS as POOL_LIMITS
    from langchain_openai.chat_models._client_utils import _resolve_socket_options
except ImportError:
    POOL_LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=100, keepalive_expiry=5.0)

    def _resolve_socket_options(value: Any) -> tuple:
        return tuple(value or ())

logger = logging.getLogger(__name__)

CONTROLS = ("domain", "top_k", "retrieval", "filters", "bias")


def citations_from(annotations: list[dict] | None, retro: dict | None) -> list[dict[str, Any]]:
    passages = {p.get("url"): p for p in (retro or {}).get("passages") or []}
    out = []
    for annotation in annotations or []:
        cite = annotation.get("url_citation") or {}
        passage = passages.get(cite.get("url")) or {}
        out.append({
            "url": cite.get("url"), "title": cite.get("title"),
            "start_index": cite.get("start_index"), "end_index": cite.get("end_index"),
            "id": passage.get("id"), "rank": passage.get("rank"), "domain": passage.get("domain"),
        })
    return out


def retro_metadata(annotations: list[dict] | None, retro: dict | None) -> dict[str, Any]:
    return {
        "citations": citations_from(annotations, retro),
        "annotations": list(annotations or []),
        "retro": retro,
        "domain": retro.get("domain"),
        "adapter": retro.get("adapter"),
        "passages": retro.get("passages") or [],
    }


class LoopBoundTransport(httpx.AsyncBaseTransport):
    """An async transport with one connection pool per event loop.

    A pooled keep-alive connection belongs to the event loop that opened it. `ChatOpenAI`'s
    default async client is shared process-wide (cached per base URL), so after one
    `asyncio.run(model.ainvoke(...))` the next `asyncio.run(...)` picks up a connection of the
    closed loop and fails with `RuntimeError: Event loop is closed`. Here each loop gets its own
    pool; pools of loops that have closed are dropped (they cannot be closed from another loop,
    their sockets close when collected).
    """

    def __init__(self, **transport_kwargs: Any) -> None:
        self._transport_kwargs = transport_kwargs
        self._pools: dict[asyncio.AbstractEventLoop | None, httpx.AsyncHTTPTransport] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _loop() -> asyncio.AbstractEventLoop | None:
        try:
            return asyncio.get_running_loop()
        except RuntimeError:  # not asyncio (trio): one pool
            return None

    def _pool(self) -> httpx.AsyncHTTPTransport:
        loop = self._loop()
        with self._lock:
            pool = self._pools.get(loop)
            if pool is None:
                for closed in [old for old in self._pools if old is not None and old.is_closed()]:
                    del self._pools[closed]
                pool = self._pools[loop] = httpx.AsyncHTTPTransport(**self._transport_kwargs)
            return pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._pool().handle_async_request(request)

    async def aclose(self) -> None:
        with self._lock:
            pool = self._pools.pop(self._loop(), None)
        if pool is not None:
            await pool.aclose()


class ChatRetroVLLM(ChatOpenAI):
    """A chat model for a retro-vllm server (`base_url="http://host:8000/v1"`).

    `model="retro"` (the default) lets the server route to a domain and its adapter; an
    adapter name or the base model's name pick them directly.
    """

    model_name: str = Field(default="retro", alias="model")
    # retro-vllm needs no key unless the server was started with --api-key.
    openai_api_key: SecretStr | None = Field(default_factory=lambda: SecretStr("unused"), alias="api_key")
    # retro-vllm (vLLM) reports usage on streams when asked: ask by default.
    stream_usage: bool | None = True
    domain: str | None = None
    top_k: int | None = None
    retrieval: bool | None = None
    filters: dict[str, Any] | None = None
    bias: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _retro_defaults(cls, values: Any) -> Any:
        """No key means the placeholder, also when `None` is passed (as `load()` does for a
        serialized model when `OPENAI_API_KEY` is unset). Async calls get a `LoopBoundTransport`
        unless the caller brings a client or a proxy (with a proxy, explicit or from the
        environment, `ChatOpenAI`'s own client setup applies)."""
        if not isinstance(values, dict):
            return values
        values = dict(values)
        for key in ("api_key", "openai_api_key"):
            if key in values and values[key] is None:
                values[key] = SecretStr("unused")
        if values.get("http_async_client") is not None:
            return values
        env_proxies = [scheme for scheme in urllib.request.getproxies() if scheme != "no"]  # "no": NO_PROXY
        if values.get("openai_proxy") or os.environ.get("OPENAI_PROXY") or env_proxies:
            return values
        transport = LoopBoundTransport(limits=POOL_LIMITS,
                                       socket_options=_resolve_socket_options(values.get("http_socket_options")))
        values["http_async_client"] = openai.DefaultAsyncHttpxClient(transport=transport)
        return values

    @property
    def _llm_type(self) -> str:
        return "retro-vllm-chat"

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        return ["langchain_retro_vllm", "chat_models"]

    def _retro_controls(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        controls = {k: getattr(self, k) for k in CONTROLS if getattr(self, k) is not None}
        controls.update({k: kwargs.pop(k) for k in CONTROLS if k in kwargs})
        return controls

    def _get_request_payload(self, input_: LanguageModelInput, *, stop: list[str] | None = None,
                             **kwargs: Any) -> dict:
        controls = self._retro_controls(kwargs)
        payload = super()._get_request_payload(input_, stop=stop, **kwargs)
        if controls:
            payload["extra_body"] = {**(payload.get("extra_body") or {}), "retro": controls}
        return payload

    def _create_chat_result(self, response: Any, generation_info: dict | None = None) -> ChatResult:
        result = super()._create_chat_result(response, generation_info)
        data = response if isinstance(response, dict) else response.model_dump(warnings=False)
        retro = data.get("retro")
        if retro is None:
            self._warn_plain_server()
            return result
        for generation, choice in zip(result.generations, data.get("choices") or []):
            annotations = (choice.get("message") or {}).get("annotations")
            generation.message.response_metadata.update(retro_metadata(annotations, retro))
        return result

    def _convert_chunk_to_generation_chunk(self, chunk: dict, default_chunk_class: type,
                                           base_generation_info: dict | None) -> ChatGenerationChunk | None:
        generation = super()._convert_chunk_to_generation_chunk(chunk, default_chunk_class, base_generation_info)
        choices = chunk.get("choices") or []
        # The server repeats `retro` on the finishing chunk, with every annotation: attach there
        # only, because LangChain concatenates string metadata when chunks are summed.
        if generation is None or not choices or not choices[0].get("finish_reason"):
            return generation
        retro = chunk.get("retro")
        if retro is None:
            self._warn_plain_server()
            return generation
        annotations = (choices[0].get("delta") or {}).get("annotations")
        generation.message.response_metadata.update(retro_metadata(annotations, retro))
        return generation

    def _warn_plain_server(self) -> None:
        if not getattr(self, "_warned_plain", False):
            object.__setattr__(self, "_warned_plain", True)
            logger.warning("the server at %s returned no `retro` object (not a retro-vllm server?): "
                           "answers carry no citations", self.openai_api_base)
