"""The benchmarks: one module a bench (`overhead`, `client_rag`, `kv_layout`, `store_scale`,
`multi_lora`, and `adapter_validation` outside the default run), each holding only its workload,
its options and its table; `harness/` holds what they share, `__main__` runs them and writes the
summary. A bench module imports no torch, vLLM or faiss at module level (the overhead bench
measures the memory of the servers beside it; see `harness/memory.py`)."""
