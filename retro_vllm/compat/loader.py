"""vLLM's model-loader plugin hook (engine side): `--load-format NAME` picks a registered loader."""

from __future__ import annotations

from vllm.model_executor.model_loader import BaseModelLoader, register_model_loader  # noqa: F401
