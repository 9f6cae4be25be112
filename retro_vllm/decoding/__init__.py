"""The engine side: what runs inside vLLM's engine core for each generation step.

- `processor`: `RetroLogitsProcessor`, the `vllm.logits_processors` entry point (both of vLLM's
  model runners): citation constraint, retrieval-aware bias, attribution.
- `markers`: what each token does to a `[n]` marker, as tables over the vocabulary.
- `attribution`: which passage a claim's words came from.
- `args`: the per-request arguments the server hands the processor, and their validation.

Must not import anything of the API server (`retro_vllm.server`, `retro_vllm.rag`, fastapi,
`retro_vllm.compat.serving`): the engine core loads this package without one.
"""
