"""`retro-vllm serve`: prepare the model, index and adapters, then start vLLM with the plugin."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from retro_vllm.cli.common import CONFIG_OPTION, fail, load

CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}  # the rest goes to vLLM
HELP = (
    "Start vLLM's OpenAI-compatible server with the retro plugin. With no arguments it serves the "
    "embedded demo offline (SmolLM2-135M-Instruct, MiniLM embedder, FAISS index of the bundled corpus) "
    "on http://127.0.0.1:8000. Any further arguments go to vLLM unchanged, e.g. "
    "`retro-vllm serve --port 9000 --max-model-len 4096`."
)


def serve(ctx: typer.Context, config_path: Optional[Path] = CONFIG_OPTION) -> None:
    from retro_vllm.launch.flags import engine_flags, given_flags, plugin_env
    from retro_vllm.prepare import PrepareError, prepare_index, prepare_model, prepare_served_model, seed_adapters

    config = load(config_path)
    user_args = list(ctx.args)
    try:
        if "--load-format" in given_flags(user_args):  # the user picks how weights load: a checkpoint then
            model_path, model_args = prepare_model(config), []
        else:
            model_path, model_args = prepare_served_model(config)
        _, version = prepare_index(config)
    except PrepareError as exc:
        fail(str(exc))
    typer.secho(f"retro-vllm: model {model_path}", err=True)
    typer.secho(f"retro-vllm: index {version.name} ({version.backend}) under {version.folder or config.home_dir}", err=True)

    args = ["--model", str(model_path), "--served-model-name", config.model.name, *model_args]
    defaults = {"--host": "127.0.0.1", "--port": "8000", "--max-model-len": "4096"}
    if config.adapters.enabled and config.domains:
        try:
            seed_adapters(config)
        except PrepareError as exc:
            fail(str(exc))
    given = given_flags([*config.serving.vllm_args, *user_args])
    for flag, value in defaults.items():
        if flag not in given:
            args += [flag, value]
    args += [*config.serving.vllm_args, *user_args]
    args += engine_flags(config, args)

    env = dict(os.environ)
    # `retro-vllm serve` loads retro's plugins only, whatever VLLM_PLUGINS the shell has.
    env.update(plugin_env(config, args), VLLM_PLUGINS="retro", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")
    # vLLM's API server, minus the scipy and scikit-learn it would load without using them
    # (retro_vllm/launch/api_server.py). The `vllm` console script of vllm-cpu crashes on a version lookup.
    command = [sys.executable, "-m", "retro_vllm.launch.api_server", *args]
    typer.secho("retro-vllm: starting vLLM: " + " ".join(command[1:]), err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(sys.executable, command, env)
