"""Retrieval: documents -> chunks -> embeddings -> a vector store -> ranked passages.

Holds the embedders (sentence-transformers, and the ONNX export the API server queries with),
the chunker, ingestion and index versions (write new, then swap), the hybrid keyword index,
fusion and reranking, the retriever, and `stores/` (one module per backend behind one contract).

Must not import the API server (`retro_vllm.server`, `retro_vllm.rag`) or vLLM: the CLI, the
benches and the server all use it.
"""
