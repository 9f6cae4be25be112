"""vLLM's LoRA resolver hook, answered from the retro registry.

vLLM asks resolvers for names it has not loaded (only with VLLM_ALLOW_RUNTIME_LORA_UPDATING=1)
and caches the result under that name, so the endpoint always sends versioned names
(`legal@3`): a new version is a new name, and serves without a restart.
"""

from __future__ import annotations

import logging

from retro_vllm.adapters.catalog import AdapterCatalog
from retro_vllm.adapters.methods import METHODS
from retro_vllm.adapters.registry import AdapterError, AdapterRegistry
from retro_vllm.compat.lora import LoRARequest, LoRAResolver, LoRAResolverRegistry

logger = logging.getLogger(__name__)

RESOLVER_NAME = "retro"


class RegistryLoRAResolver(LoRAResolver):
    def __init__(self) -> None:
        self.catalog: AdapterCatalog | None = None

    def _catalog(self) -> AdapterCatalog:
        if self.catalog is None:  # stock vLLM without our endpoint: read the config ourselves
            from retro_vllm.config import load_config

            config = load_config()
            self.catalog = AdapterCatalog(AdapterRegistry(config.registry_dir), base_model=config.model.name, max_rank=None)
        return self.catalog

    async def resolve_lora(self, base_model_name: str, lora_name: str) -> LoRARequest | None:
        from retro_vllm.config import ConfigError

        try:
            manifest, folder = self._catalog().lookup(lora_name)
        except (AdapterError, ConfigError, OSError) as exc:
            # Never fail vLLM's request path from here: another resolver may know the name.
            logger.warning("retro resolver: %s", exc)
            return None
        method = METHODS[manifest.type]  # known: the catalog verified the manifest
        if not method.uses_lora_slot:  # e.g. a soft prompt, served through prompt embeddings
            logger.warning("retro resolver: %s is a %s adapter, served as %s; it is not a LoRA", lora_name,
                           method.name, method.served_as)
            return None
        # The id is overwritten by vLLM's per-process counter; the name must stay the one asked for.
        return LoRARequest(lora_name=lora_name, lora_int_id=1, lora_path=str(folder))


_resolver: RegistryLoRAResolver | None = None


def register_resolver() -> RegistryLoRAResolver:
    global _resolver
    if _resolver is None:
        _resolver = RegistryLoRAResolver()
        LoRAResolverRegistry.register_resolver(RESOLVER_NAME, _resolver)
    return _resolver
