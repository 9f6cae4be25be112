"""What every command shares: the --config option, loading the config, failing with one line."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn, Optional

import typer

CONFIG_OPTION = typer.Option(
    None, "--config", "-c", help="YAML configuration (default: $RETRO_VLLM_CONFIG, else the bundled demo).",
    exists=False, dir_okay=False,
)


def fail(message: str) -> NoReturn:
    typer.secho(f"retro-vllm: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def load(config_path: Optional[Path]):
    from retro_vllm.config import ConfigError, load_config

    try:
        return load_config(config_path)
    except ConfigError as exc:
        fail(str(exc))
