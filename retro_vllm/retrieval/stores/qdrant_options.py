"""The options of the Qdrant server store (`retrieval.qdrant` in the YAML).

Light on purpose: `retro_vllm.config` imports it to parse the YAML, so it imports pydantic only,
never qdrant_client.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class QdrantOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field("http://localhost:6333", description="Qdrant server URL.")
    api_key: str | None = Field(None, description="Qdrant API key; empty = $QDRANT_API_KEY if set.")
    collection: str = Field("retro", description="Collection holding every domain's chunks.")
    timeout_s: float = Field(5.0, gt=0, description="Per-call timeout.")
