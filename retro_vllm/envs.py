"""Every environment variable retro-vllm reads, in one table (read lazily)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

_DEFAULT_HOME = Path.home() / ".cache" / "retro-vllm"

environment_variables: dict[str, Callable[[], Any]] = {
    # YAML configuration used by the plugin inside stock `vllm serve`; `retro-vllm serve`
    # sets it for the server it starts.
    "RETRO_VLLM_CONFIG": lambda: os.environ.get("RETRO_VLLM_CONFIG") or None,
    # Where converted models, indexes and adapters live.
    "RETRO_VLLM_HOME": lambda: Path(os.environ.get("RETRO_VLLM_HOME") or _DEFAULT_HOME).expanduser(),
    # vLLM's own plugin filter, read to keep the user's other plugins when retro's is added.
    "VLLM_PLUGINS": lambda: [p.strip() for p in os.environ.get("VLLM_PLUGINS", "").split(",") if p.strip()],
    # Server-store credentials when the YAML leaves `api_key` empty (keeps secrets out of files).
    "QDRANT_API_KEY": lambda: os.environ.get("QDRANT_API_KEY") or None,
    "WEAVIATE_API_KEY": lambda: os.environ.get("WEAVIATE_API_KEY") or None,
}


def __getattr__(name: str) -> Any:
    if name in environment_variables:
        return environment_variables[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return list(environment_variables)
