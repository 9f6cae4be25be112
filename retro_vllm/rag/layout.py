"""The prompt layout: preamble, then passages numbered [1]..[k] in a canonical order, then the
conversation (or the completion prompt).

Passages are ordered by id, not by score: the same set of passages then yields the same token
prefix, which vLLM's prefix cache can reuse across requests. Training (`retro_vllm.adapters`) and
evaluation render prompts with these same functions, so this module imports nothing but the
passage records: no vLLM, no torch.
"""

from __future__ import annotations

from typing import Any

from retro_vllm.retrieval.types import Passage, ScoredChunk


def order_passages(hits: list[ScoredChunk]) -> list[Passage]:
    ordered = sorted(hits, key=lambda h: h.chunk.id)
    return [Passage(rank=n, chunk=h.chunk, score=h.score, stage=h.stage, scores=dict(h.scores)) for n, h in enumerate(ordered, 1)]


def sources_block(passages: list[Passage]) -> str:
    return "\n\n".join(f"[{p.rank}] {p.chunk.title}\n{p.chunk.text}" for p in passages)


def system_text(preamble: str, passages: list[Passage]) -> str:
    if not passages:
        return preamble
    return f"{preamble}\n\nSources:\n\n{sources_block(passages)}"


def completion_prompt(preamble: str, passages: list[Passage], prompt: str) -> str:
    return f"{system_text(preamble, passages)}\n\n{prompt}"


def message_text(content: Any) -> str:
    """Text of an OpenAI message `content`: a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message.get("content")).strip()
    return ""


def assemble_messages(messages: list[dict[str, Any]], preamble: str, passages: list[Passage]) -> list[dict[str, Any]]:
    """One leading system message carries preamble and sources. A client's own leading
    system (or developer) message is kept, appended after the sources, so chat templates
    that accept a single system turn still work."""
    head = system_text(preamble, passages)
    rest = list(messages)
    if rest and rest[0].get("role") in ("system", "developer"):
        client_system = message_text(rest.pop(0).get("content")).strip()
        if client_system:
            head = f"{head}\n\n{client_system}"
    return [{"role": "system", "content": head}, *rest]
