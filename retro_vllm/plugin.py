"""vLLM entry points, and nothing else.

vLLM imports these in every process it starts (general plugins) or in the API server
(endpoint plugins), so this module imports nothing heavy at import time and each entry
point may run more than once.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("retro_vllm")

_registered = False


def register() -> None:
    """`vllm.general_plugins`: runs in the API server, the engine core and every worker."""
    global _registered
    if _registered:
        return
    _registered = True
    # Adapter resolver and model loaders are registered here as they land; until then
    # there is nothing engine-side to install.
    logger.debug("retro general plugin loaded")


def endpoint():
    """`vllm.endpoint_plugins`: a factory for the endpoint plugin (needs VLLM_PLUGINS=retro)."""
    from retro_vllm.server.endpoint import RetroEndpointPlugin

    return RetroEndpointPlugin()
