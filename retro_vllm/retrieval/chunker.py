"""Token-aware chunking with the embedder's own tokenizer."""

from __future__ import annotations

import re
from typing import Iterator

from retro_vllm.retrieval.types import Chunk, Document

_WHITESPACE = re.compile(r"\s+")


def chunk_document(document: Document, tokenizer, *, max_tokens: int, overlap_tokens: int) -> Iterator[Chunk]:
    """Split a document into windows of at most `max_tokens` embedder tokens.

    Windows are cut on token boundaries and mapped back to character offsets, so chunk
    text is an exact slice of the document (whitespace normalized) and never a decoded
    approximation.
    """
    text = _WHITESPACE.sub(" ", document.text).strip()
    if not text:
        return
    # Whole documents exceed the embedder's window on purpose (they are cut below): no warning.
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    offsets = encoding["offset_mapping"]
    step = max_tokens - overlap_tokens
    starts = range(0, max(len(offsets) - overlap_tokens, 1), step) if len(offsets) > max_tokens else [0]
    for n, start in enumerate(starts):
        window = offsets[start : start + max_tokens]
        if not window:
            break
        begin, end = window[0][0], window[-1][1]
        # Never cut a word in half at either edge of the window.
        while begin > 0 and not text[begin - 1].isspace():
            begin -= 1
        while end < len(text) and not text[end].isspace():
            end += 1
        yield Chunk(
            id=f"{document.id}#{n}",
            doc_id=document.id,
            text=text[begin:end].strip(),
            domain=document.domain,
            title=document.title,
            url=document.url,
            tenant=document.tenant,
            metadata=dict(document.metadata),
        )
