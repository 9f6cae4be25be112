"""vLLM entry points, and nothing else.

vLLM imports these in every process it starts (general plugins) or in the API server
(endpoint plugins), so this module imports nothing heavy at import time and each entry
point may run more than once.
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("retro_vllm")

_registered = False


def register() -> None:
    """`vllm.general_plugins`: runs in the API server, the engine core and every worker, before
    any of them picks its model loader."""
    global _registered
    if _registered:
        return
    _registered = True
    if "serve" in sys.argv[1:2]:  # `vllm serve ... --plugin retro`: runs before vLLM parses argv
        from retro_vllm.launch.vllm_cli import apply

        apply()
    try:
        from retro_vllm.adapters.resolver import register_resolver

        register_resolver()
    except ImportError as exc:  # a vLLM without the resolver hook: adapters need --lora-modules
        logger.warning("retro: LoRA resolver not registered (%s)", exc)
    try:
        from retro_vllm.models.gguf_loader import register as register_gguf_loader

        register_gguf_loader()
    except ImportError as exc:  # a vLLM without loader plugins: serve converted checkpoints
        logger.warning("retro: GGUF loader (--load-format retro-gguf) not registered (%s)", exc)


def endpoint():
    """`vllm.endpoint_plugins`: a factory for the endpoint plugin (needs VLLM_PLUGINS=retro)."""
    from retro_vllm.server.endpoint import RetroEndpointPlugin

    return RetroEndpointPlugin()
