"""The bench's demo: the bundled demo config on a fresh home, with the index and the embedder's
ONNX export made once under RETRO_VLLM_HOME and shared by every server a bench starts."""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.harness.memory import isolated


def demo_config(home: Path, **sections: dict) -> Path:
    """The bundled demo with absolute paths, a fresh home and the already-converted model;
    `sections` are merged into the config's top-level sections. The home starts with the demo
    index and the embedder's ONNX export already made (see `prepared_demo`)."""
    import yaml

    from retro_vllm import envs
    from retro_vllm.config import write_demo_config
    from retro_vllm.models.default_model import ensure_default_model

    model = ensure_default_model(envs.RETRO_VLLM_HOME, progress=True)
    shared = prepared_demo(model)
    path = write_demo_config(home, model)
    (home / "embedders").symlink_to(shared / "embedders", target_is_directory=True)
    shutil.copytree(shared / "home" / "index", home / "index")
    if sections:
        raw = yaml.safe_load(path.read_text())
        for name, values in sections.items():
            raw.setdefault(name, {}).update(values)
        path.write_text(yaml.safe_dump(raw))
    return path


def prepared_demo(model: Path) -> Path:
    """A folder under RETRO_VLLM_HOME with the demo index (`home/index`) and the embedder's ONNX
    export (`embedders`), made once and then only checked. Why: every bench starts its servers
    on a fresh home, and each would otherwise load torch, embed the corpus and export the
    embedder again (about 25 s a server on 2 cores) before serving; a restarted server skips the
    same work. The index is checked the way a server checks it (corpus, chunking, backend and
    embedder), in a separate process so that this one never maps torch."""
    from retro_vllm import envs
    from retro_vllm.config import write_demo_config

    shared = envs.RETRO_VLLM_HOME / "bench-demo"
    (shared / "embedders").mkdir(parents=True, exist_ok=True)
    isolated(_prepare_demo, write_demo_config(shared / "home", model), shared / "embedders")
    return shared


def _prepare_demo(config_path: Path, embedders: Path) -> None:
    from retro_vllm.config import load_config
    from retro_vllm.retrieval.embedder import Embedder
    from retro_vllm.retrieval.ingest import ensure_index
    from retro_vllm.retrieval.onnx_embedder import ensure_export

    config = load_config(config_path)
    embedder = Embedder(config.embedder.path)
    ensure_index(config, embedder, progress=False)
    ensure_export(embedder.path, embedders)
