"""The options of the Weaviate server store (`retrieval.weaviate` in the YAML).

Light on purpose: `retro_vllm.config` imports it to parse the YAML, so it imports pydantic only,
never weaviate.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class WeaviateOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field("http://localhost:8080", description="Weaviate HTTP URL.")
    grpc_port: int = Field(50051, ge=1, le=65535, description="Weaviate gRPC port (same host as url).")
    api_key: str | None = Field(None, description="Weaviate API key; empty = $WEAVIATE_API_KEY if set.")
    collection: str = Field("Retro", description="Collection holding every domain's chunks.")
    multi_tenancy: bool = Field(
        False, description="Map each chunk's tenant to a Weaviate tenant (chunks without a tenant go to 'default')."
    )
    timeout_s: float = Field(5.0, gt=0, description="Per-call timeout.")
