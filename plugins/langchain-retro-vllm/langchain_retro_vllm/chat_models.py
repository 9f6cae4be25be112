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
"""

from __future__ import annotations

import logging
from typing import Any

from langchain_core.language_models import LanguageModelInput
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_openai import ChatOpenAI
from pydantic import Field, SecretStr

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
