"""`[n]` markers in generated text -> OpenAI `url_citation` annotations."""

from __future__ import annotations

import re
from typing import Any

from retro_vllm.retrieval.types import Passage

MARKER = re.compile(r"\[(\d{1,4})\]")


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
