"""SSE post-processing: `retro` on the first chunk; on each choice's finishing chunk, all
of that choice's annotations (offsets into its whole streamed text) and `retro` again."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any, AsyncIterator, Callable

from retro_vllm.decoding.citations import extract_citations
from retro_vllm.retrieval.types import Passage
from retro_vllm.server.metrics import record

DATA = "data: "


async def annotate_stream(
    events: AsyncIterator[str],
    summary: dict[str, Any],
    passages_for_choice: Callable[[int], list[Passage]],
    *,
    chat: bool,
    model: str | None = None,
) -> AsyncIterator[str]:
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
            record(summary, None)
        if chunk.get("usage") and not chunk["choices"]:  # the final usage chunk (include_usage)
            record(summary, chunk["usage"], count_request=False)
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
