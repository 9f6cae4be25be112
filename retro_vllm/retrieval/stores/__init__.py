"""Vector stores, one file each, all behind `retro_vllm.retrieval.stores.base.VectorStore`."""
