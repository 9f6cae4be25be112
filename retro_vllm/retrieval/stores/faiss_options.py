"""The options of the FAISS store (`retrieval.faiss` in the YAML).

Light on purpose: `retro_vllm.config` imports it to parse the YAML, so it imports pydantic only,
never faiss.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class FaissOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: Literal["auto", "flat", "hnsw"] = Field(
        "auto", description="flat = exact search; hnsw = approximate graph search; auto = flat below hnsw_above chunks."
    )
    hnsw_above: int = Field(
        10_000, ge=0,
        description="With index: auto, collections of at least this many chunks use HNSW. From about 10k chunks (15 MB "
        "of 384-d float32 vectors; Qdrant's default full-scan threshold is 10 MB) a flat scan costs more than the "
        "graph walk (bench/store_scale at 10k, unfiltered: 0.47 against 0.73 ms, recall@10 1.000), and the default sq8 graph "
        "holds less memory than the flat vectors (10k: about 7 MB against 15 MB). Filtered searches over few chunks stay exact.",
    )
    hnsw_m: int = Field(32, ge=4, le=128, description="HNSW graph degree.")
    ef_construction: int = Field(
        100, ge=8,
        description="HNSW build-time beam width. 100 builds the graph about twice as fast as 200 (a publish at 100k "
        "chunks rebuilds it, in the API server too when documents are posted there); with the exact re-rank of an "
        "sq8 graph, recall@10 stays 1.000 on bench/store_scale's vectors.",
    )
    ef_search: int = Field(128, ge=8, description="HNSW search-time beam width (recall vs speed).")
    hnsw_vectors: Literal["sq8", "fp16", "fp32"] = Field(
        "sq8",
        description="What an HNSW graph walks over, in the API server's memory. sq8: 8-bit codes (100k x 384: "
        "38 MB of codes), the walk finds 4x the hits wanted and ranks them by their exact float32 vectors read from "
        "chunks.sqlite on disk, so scores are exact; recall@10 against exact search 1.000 on bench/store_scale's "
        "100k vectors. fp16: half-precision vectors (77 MB), scores move by up to ~5e-4, recall@10 0.9997. fp32: "
        "full vectors (154 MB). Flat indexes keep fp32.",
    )
