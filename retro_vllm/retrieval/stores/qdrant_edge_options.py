"""The options of the Qdrant Edge store (`retrieval.qdrant_edge` in the YAML).

Light on purpose: `retro_vllm.config` imports it to parse the YAML, so it imports pydantic only,
never qdrant_edge.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class QdrantEdgeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hnsw_m: int = Field(16, ge=4, le=128, description="HNSW graph degree.")
    ef_construct: int = Field(100, ge=8, description="HNSW build-time beam width.")
    ef_search: int = Field(128, ge=8, description="HNSW search-time beam width.")
