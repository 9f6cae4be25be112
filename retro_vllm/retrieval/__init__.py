"""Retrieval: documents -> chunks -> embeddings -> a vector store -> ranked passages."""
