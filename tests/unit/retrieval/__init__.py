"""Unit tests of retro_vllm.retrieval, mirroring its layout."""
