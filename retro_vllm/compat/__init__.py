"""Every import of a vLLM internal and every run-time patch of vLLM lives in this package, so a
vLLM upgrade touches this folder alone (`tests/unit/test_layout.py` holds the rest of the
package to it).

One module per side of vLLM, so importing one side never loads the other:
- `serving`: the OpenAI-compatible API server (handlers, request/response models, errors).
- `renderers`: the one run-time patch, the chat/completion handlers' render step.
- `logits`: the two logits-processor interfaces (engine side).
- `lora`: LoRA requests and the resolver registry.
- `loader`: model-loader registration (engine side).
- `launcher`: vLLM's API-server entry point.

Documented plugin interfaces (entry-point groups, the endpoint-plugin Protocol) are not
internals. This `__init__` imports nothing.
"""
