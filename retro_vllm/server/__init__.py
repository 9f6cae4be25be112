"""The endpoint plugin, HTTP only: the routes vLLM's API server mounts (`endpoint`), how a
request is read (`request`) and answered (`respond`, `errors`), the catalog and document routes,
and the metrics. Each generating route calls the steps of `retro_vllm.rag` top to bottom.

Nothing else in the package imports this one (the pipeline in `rag` knows no HTTP).
"""
