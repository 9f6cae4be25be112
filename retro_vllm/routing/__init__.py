"""Domain routing: which domain (and so which adapter) answers a query, from a nearest-centroid
classifier over the embedder's vectors, and its training.

Must not import the API server or vLLM: the server and `retro-vllm eval router` both use it.
"""
