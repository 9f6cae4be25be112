"""Adapters: retrieval-augmented training, the versioned registry, and loading into vLLM."""
