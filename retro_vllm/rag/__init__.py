"""The request pipeline, API-server side, one module a step, in the order a request runs them:

- `route`: what `model` names; which domain and adapter answer (ONE route builder).
- `retrieve`: search the routed domain within the timeout; degrade or 503 by config.
- `assemble`: the prompt layout (preamble, numbered passages, conversation), fitted to the context.
- `steer`: the logits processor's arguments for the request.
- `cite`: markers -> `url_citation` annotations (whole responses and streams), the `retro` object.
Around them: `controls` (the `retro` request object), `state` (what every request shares),
`prompt_adapters` (soft prompts served as embeddings), `errors`, `timing`.

Rules (held by tests/unit/test_layout.py): nothing here imports `retro_vllm.server` (HTTP) or
fastapi; nothing here runs in the engine (`retro_vllm.decoding` is the engine side).
"""
