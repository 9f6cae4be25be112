"""Starting vLLM with the plugin, whichever way a user does it: `flags` (the engine flags and the
environment retro-vllm adds to a launch), `vllm_cli` (`vllm serve MODEL --plugin retro`, applied
by the general plugin before vLLM parses its arguments) and `api_server` (`python -m
retro_vllm.launch.api_server`: vLLM's own API server, with libraries it never uses left unloaded).

Must not import at package import: vLLM, torch, or anything heavy (the general plugin imports
`vllm_cli` in every vLLM process).
"""
