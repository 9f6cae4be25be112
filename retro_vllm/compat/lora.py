"""vLLM's LoRA request type and its resolver hook (`LoRAResolverRegistry`)."""

from __future__ import annotations

from vllm.lora.request import LoRARequest  # noqa: F401
from vllm.lora.resolver import LoRAResolver, LoRAResolverRegistry  # noqa: F401
