"""What must exist before vLLM starts: the served model, the index and the shipped adapters.

Shared by the command line (`retro-vllm serve`, `train`, `eval router`), the server's start-up
and the benches. Each step opens what an earlier run made and builds only what is missing or
out of date (converting the default model, embedding a changed corpus), with progress on
stderr. A problem is one `PrepareError` whose message is the line to show the user (the CLI
prints it and exits 2), never a traceback from inside vLLM.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable


class PrepareError(Exception):
    """Something serving needs is missing or broken; the message says what, in one line."""


def say(message: str) -> None:
    """A notice while preparing: one `retro-vllm: ...` line on stderr."""
    print(f"retro-vllm: {message}", file=sys.stderr, flush=True)


def prepare_model(config) -> Path:
    """The served checkpoint; the embedded default is converted once (with progress)."""
    from retro_vllm.models.default_model import ModelUnavailableError, ensure_default_model

    try:
        path = config.model.path or ensure_default_model(config.home_dir)
    except (ModelUnavailableError, OSError) as exc:
        raise PrepareError(str(exc)) from exc
    problem = checkpoint_problem(path)
    if problem:
        where = f"model.path in {config.source}" if config.model.path else "delete the folder to convert it again"
        raise PrepareError(f"model at {path} is unusable: {problem} ({where})")
    return path


def prepare_served_model(config) -> tuple[Path, list[str]]:
    """The folder vLLM serves and the engine arguments it needs: the embedded default straight
    from its GGUF (`model.from_gguf`), else a checkpoint as `prepare_model` gives."""
    if config.model.path or not config.model.from_gguf:
        return prepare_model(config), []
    from retro_vllm.models.default_model import ModelUnavailableError, ensure_default_gguf_folder
    from retro_vllm.models.gguf_weights import LOAD_FORMAT

    try:
        return ensure_default_gguf_folder(config.home_dir), ["--load-format", LOAD_FORMAT]
    except (ModelUnavailableError, OSError) as exc:
        raise PrepareError(str(exc)) from exc


def checkpoint_problem(path: Path) -> str | None:
    """A cheap look before vLLM starts, so a broken checkpoint is one line, not a traceback."""
    try:
        json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        return f"config.json: {exc}"
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        return "no *.safetensors weights"
    from safetensors import safe_open

    for weight in weights:
        try:
            with safe_open(str(weight), framework="numpy") as handle:
                handle.keys()
        except Exception as exc:  # safetensors raises several error types for a bad header
            return f"{weight.name}: {exc}"
    return None


def prepare_index(config, *, notify: Callable[[str], None] = say):
    """The embedder and the current index, built first if the corpus changed (with progress).
    Opens the store once, so a corrupt index or an unreachable server is one line, not a
    traceback inside vLLM."""
    from retro_vllm.retrieval.corpus import CorpusError
    from retro_vllm.retrieval.embedder import Embedder, EmbedderUnavailableError
    from retro_vllm.retrieval.index import IndexUnavailableError, open_store
    from retro_vllm.retrieval.ingest import ensure_index
    from retro_vllm.retrieval.stores.base import StoreError

    try:
        embedder = Embedder(config.embedder.path, batch_size=config.embedder.batch_size)
        version = ensure_index(config, embedder, progress=True)
        # Asked lazily: the embedder's dimension loads torch and the model (seconds of every start),
        # and an embedded store knows its own.
        store = open_store(config, version, lambda: embedder.dimension)
        store.health()
        if not store.count():
            notify("the index has no passages; answers will come without sources")
        store.close()
        return embedder, version
    except (EmbedderUnavailableError, IndexUnavailableError, StoreError, CorpusError, OSError) as exc:
        message = f"{exc} (run `retro-vllm index` to rebuild)" if isinstance(exc, IndexUnavailableError) else str(exc)
        raise PrepareError(message) from exc


def seed_adapters(config, *, notify: Callable[[str], None] = say) -> None:
    """Import the shipped adapters of the configured domains into the registry, once each."""
    from retro_vllm.adapters.registry import AdapterError, AdapterRegistry, seed_registry

    try:
        for manifest in seed_registry(AdapterRegistry(config.registry_dir), config.adapter_seeds(),
                                      base_model=config.model.name):
            notify(f"registered shipped adapter {manifest.served_name}")
    except (AdapterError, OSError, KeyError, ValueError) as exc:
        raise PrepareError(f"cannot import shipped adapters into {config.registry_dir}: {exc}") from exc
