"""Records that cross the retrieval seams."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Document:
    """One source document as a user supplies it."""

    id: str
    text: str
    domain: str
    title: str = ""
    url: str | None = None
    tenant: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Chunk:
    """A piece of a document small enough to embed; `id` is `<doc>#<n>`."""

    id: str
    doc_id: str
    text: str
    domain: str
    title: str = ""
    url: str | None = None
    tenant: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it walks every field recursively (~50 us a chunk, seconds of a
        # 100k-chunk publish); only metadata can hold something mutable.
        record = {name: getattr(self, name) for name in _CHUNK_FIELDS}
        record["metadata"] = copy.deepcopy(self.metadata) if self.metadata else {}
        return record

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> "Chunk":
        return cls(**payload)

    @property
    def citation_url(self) -> str:
        """The document's own URL, else a stable `retro://` address for the chunk."""
        return self.url or f"retro://{self.domain}/{self.id}"


_CHUNK_FIELDS = tuple(f.name for f in fields(Chunk) if f.name != "metadata")


@dataclass(frozen=True)
class ScoredChunk:
    chunk: Chunk
    score: float
    stage: str = "dense"
    scores: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Passage:
    """A chunk as placed in a prompt: `rank` is its [n] number there."""

    rank: int
    chunk: Chunk
    score: float
    stage: str
    scores: dict[str, float]

    def to_contract(self) -> dict[str, Any]:
        """The `retro.passages[]` shape of the HTTP contract."""
        return {
            "rank": self.rank,
            "id": self.chunk.id,
            "title": self.chunk.title,
            "url": self.chunk.citation_url,
            "text": self.chunk.text,
            "score": round(self.score, 6),
            "stage": self.stage,
            "scores": {k: round(v, 6) for k, v in self.scores.items()},
            "domain": self.chunk.domain,
        }
