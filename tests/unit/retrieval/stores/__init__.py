"""Unit tests of retro_vllm.retrieval.stores, one file per module; the behaviour every store
shares is in tests/contract."""
