"""`RetroVLLM`: an `OpenAILike` LLM for a retro-vllm server that keeps its citations.

A LlamaIndex `ChatResponse`/`CompletionResponse` only keeps citations in `raw`. This class puts
them, once per answer, in the response's `additional_kwargs` and the message's
`additional_kwargs`: `citations` (one per `[n]` marker: url, title, start_index, end_index, id,
rank, domain), `annotations` (the raw OpenAI list), `retro` (the server's object), `domain`,
`adapter`, `passages`. In a stream they arrive on the final response. Per-call controls
(`domain`, `top_k`, `retrieval`, `filters`, `bias`) go in the request's `retro` object.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, ChatResponseAsyncGen, ChatResponseGen
from llama_index.llms.openai_like import OpenAILike

logger = logging.getLogger(__name__)

CONTROLS = ("domain", "top_k", "retrieval", "filters", "bias")


def _as_dict(raw: Any) -> dict:
    if isinstance(raw, dict):
        return raw
    return raw.model_dump(warnings=False) if hasattr(raw, "model_dump") else {}


def retro_metadata(raw: Any) -> dict[str, Any] | None:
    """From a chat completion or a finishing chunk: the retro keys, or None (no `retro`)."""
    data = _as_dict(raw)
    retro = data.get("retro")
    if retro is None:
        return None
    choice = (data.get("choices") or [{}])[0]
    annotations = ((choice.get("message") or choice.get("delta") or {}).get("annotations")) or []
    passages = {p.get("url"): p for p in retro.get("passages") or []}
    citations = []
    for annotation in annotations:
        cite = annotation.get("url_citation") or {}
        passage = passages.get(cite.get("url")) or {}
        citations.append({"url": cite.get("url"), "title": cite.get("title"), "start_index": cite.get("start_index"),
                          "end_index": cite.get("end_index"), "id": passage.get("id"), "rank": passage.get("rank"),
                          "domain": passage.get("domain")})
    return {"citations": citations, "annotations": annotations, "retro": retro, "domain": retro.get("domain"),
            "adapter": retro.get("adapter"), "passages": retro.get("passages") or []}


class RetroVLLM(OpenAILike):
    """`RetroVLLM(api_base="http://127.0.0.1:8000/v1")`; `model="retro"` lets the server route."""

    domain: str | None = None
    top_k: int | None = None
    retrieval: bool | None = None
    filters: dict[str, Any] | None = None
    bias: float | None = None

    def __init__(self, model: str = "retro", api_key: str = "unused", is_chat_model: bool = True,
                 **kwargs: Any) -> None:
        # OpenAI's constructor has its own defaults (an OpenAI model, a key from the environment).
        super().__init__(model=model, api_key=api_key, is_chat_model=is_chat_model, **kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "RetroVLLM"

    def _get_model_kwargs(self, **kwargs: Any) -> dict[str, Any]:
        controls = {k: getattr(self, k) for k in CONTROLS if getattr(self, k) is not None}
        controls.update({k: kwargs.pop(k) for k in CONTROLS if k in kwargs})
        model_kwargs = super()._get_model_kwargs(**kwargs)
        if controls:
            model_kwargs["extra_body"] = {**(model_kwargs.get("extra_body") or {}), "retro": controls}
        return model_kwargs

    def _enrich(self, response: ChatResponse, *, final: bool = True) -> ChatResponse:
        meta = retro_metadata(response.raw)
        if meta is None:
            if final:
                self._warn_plain_server()
            return response
        response.additional_kwargs.update(meta)
        response.message.additional_kwargs.update(meta)
        return response

    @staticmethod
    def _finishing(response: ChatResponse) -> bool:
        choices = _as_dict(response.raw).get("choices") or []
        return bool(choices and choices[0].get("finish_reason"))

    def _chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._enrich(super()._chat(messages, **kwargs))

    async def _achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._enrich(await super()._achat(messages, **kwargs))

    def _stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        def gen() -> ChatResponseGen:
            for response in super(RetroVLLM, self)._stream_chat(messages, **kwargs):
                yield self._enrich(response) if self._finishing(response) else response

        return gen()

    async def _astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        inner = await super()._astream_chat(messages, **kwargs)

        async def gen() -> ChatResponseAsyncGen:
            async for response in inner:
                yield self._enrich(response) if self._finishing(response) else response

        return gen()

    def _warn_plain_server(self) -> None:
        if not getattr(self, "_warned_plain", False):
            object.__setattr__(self, "_warned_plain", True)
            logger.warning("the server at %s returned no `retro` object (not a retro-vllm server?): "
                           "answers carry no citations", self.api_base)
