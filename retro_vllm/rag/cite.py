"""Step 5, cite: `[n]` markers in generated text -> OpenAI `url_citation` annotations, on whole
responses and on SSE streams, and the `retro` object that tells the client what was used."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any, AsyncIterator, Callable

from retro_vllm.decoding.markers import MARKER
from retro_vllm.rag.controls import RetroControls
from retro_vllm.rag.route import Route
from retro_vllm.retrieval.types import Passage

DATA = "data: "


def extract_citations(text: str, passages: list[Passage]) -> list[dict[str, Any]]:
    """One annotation per marker naming a supplied passage, in text order.

    Offsets are Python string indices: `text[start_index:end_index]` is the marker.
    Numbers outside 1..len(passages) are not citations and are ignored.
    """
    by_rank = {p.rank: p for p in passages}
    annotations = []
    for match in MARKER.finditer(text or ""):
        passage = by_rank.get(int(match.group(1)))
        if passage is None:
            continue
        annotations.append(
            {
                "type": "url_citation",
                "url_citation": {
                    "url": passage.chunk.citation_url,
                    "title": passage.chunk.title,
                    "start_index": match.start(),
                    "end_index": match.end(),
                },
            }
        )
    return annotations


def annotate_payload(payload: dict[str, Any], passages_for_choice: Callable[[int], list[Passage]], chat: bool) -> None:
    for choice in payload["choices"]:
        passages = passages_for_choice(choice["index"])
        if chat:
            message = choice["message"]
            # vLLM types `annotations` as one object; OpenAI clients expect a list.
            message["annotations"] = extract_citations(message.get("content") or "", passages)
        else:
            choice["annotations"] = extract_citations(choice.get("text") or "", passages)


def retro_summary(
    route: Route, controls: RetroControls, passages: list[Passage], *, dropped: list[Passage] = ()
) -> dict[str, Any]:
    summary = {
        "domain": route.domain,
        "adapter": route.adapter,
        "route": route.route,
        "route_score": route.score,
        "retrieval": route.retrieval,
        "passages": [p.to_contract() for p in passages],
    }
    if dropped:
        summary["dropped"] = [{"id": p.chunk.id, "score": round(p.score, 6), "reason": "context_length"} for p in dropped]
    return summary


async def annotate_stream(
    events: AsyncIterator[str],
    summary: dict[str, Any],
    passages_for_choice: Callable[[int], list[Passage]],
    *,
    chat: bool,
    model: str | None = None,
    observe: Callable[..., None] = lambda *args, **kwargs: None,
) -> AsyncIterator[str]:
    """`retro` on the first chunk; on each choice's finishing chunk, all of that choice's
    annotations (offsets into its whole streamed text) and `retro` again. `observe(summary,
    usage, count_request=...)` sees the request once and its usage when the stream reports it."""
    texts: dict[int, str] = defaultdict(str)
    first = True
    async for event in events:
        chunk = _parse(event)
        if chunk is None:
            yield event
            continue
        if model is not None:
            chunk["model"] = model
        if first:
            chunk["retro"] = summary
            first = False
            observe(summary, None)
        if chunk.get("usage") and not chunk["choices"]:  # the final usage chunk (include_usage)
            observe(summary, chunk["usage"], count_request=False)
        for choice in chunk["choices"]:
            index = choice.get("index", 0)
            if chat:
                delta = choice.get("delta") or {}
                texts[index] += delta.get("content") or ""
            else:
                texts[index] += choice.get("text") or ""
            if choice.get("finish_reason") is None:
                continue
            annotations = extract_citations(texts[index], passages_for_choice(index))
            if chat:
                delta["annotations"] = annotations
                choice["delta"] = delta
            else:
                choice["annotations"] = annotations
            chunk["retro"] = summary
        yield f"{DATA}{json.dumps(chunk, ensure_ascii=False)}\n\n"


def _parse(event: str) -> dict[str, Any] | None:
    """A chunk with choices, or None for anything to pass through untouched ([DONE],
    keep-alive comments, errors)."""
    if not event.startswith(DATA) or event.startswith(DATA + "[DONE]"):
        return None
    try:
        chunk = json.loads(event[len(DATA):])
    except json.JSONDecodeError:
        return None
    if not isinstance(chunk, dict) or not isinstance(chunk.get("choices"), list):
        return None
    return chunk
