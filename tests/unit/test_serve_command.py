"""What `retro-vllm serve` hands vLLM: the embedded default straight from its GGUF through the
`retro-gguf` load format, unless the config or the command line asks for a checkpoint."""

from __future__ import annotations

import json
import os

import pytest
import yaml
from typer.testing import CliRunner

from retro_vllm import cli, prepare
from retro_vllm.models.gguf_weights import GGUF_POINTER


class Launched(Exception):
    pass


@pytest.fixture
def launch(tmp_path, monkeypatch):
    """Runs `serve` up to the exec of vLLM and returns the command it would run."""
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("\n".join(json.dumps({"id": f"d{i}", "text": f"Passage {i} about topic {i}."}) for i in range(3)))
    seen = {}

    def fake_exec(_file, command, _env):
        seen["command"] = command
        raise Launched

    monkeypatch.setattr(os, "execvpe", fake_exec)
    monkeypatch.setattr(prepare, "prepare_model", lambda config: tmp_path / "converted")  # no 260 MB conversion here

    def run(model: dict, *extra: str) -> list[str]:
        config = tmp_path / "retro.yaml"
        config.write_text(yaml.safe_dump({"home": str(tmp_path / "home"), "model": model, "adapters": {"enabled": False},
                                          "domains": [{"name": "a", "corpus": [str(corpus)]}]}))
        result = CliRunner().invoke(cli.app, ["serve", "--config", str(config), *extra])
        assert isinstance(result.exception, Launched), result.output
        return seen["command"]

    return run


def value(command: list[str], flag: str) -> str | None:
    return command[command.index(flag) + 1] if flag in command else None


def test_default_serves_the_packaged_gguf_without_converted_weights(launch, tmp_path):
    command = launch({})
    folder = tmp_path / "home" / "models"
    model = value(command, "--model")
    assert value(command, "--load-format") == "retro-gguf"
    assert model.startswith(str(folder)) and (folder / model.rsplit("/", 1)[1] / GGUF_POINTER).is_file()
    assert not list((folder / model.rsplit("/", 1)[1]).glob("*.safetensors"))


def test_checkpoint_when_configured_or_when_the_user_picks_a_load_format(launch, tmp_path):
    assert value(launch({"from_gguf": False}), "--load-format") is None
    assert value(launch({"from_gguf": False}), "--model") == str(tmp_path / "converted")
    command = launch({}, "--load-format", "safetensors")
    assert value(command, "--model") == str(tmp_path / "converted")
    assert command.count("--load-format") == 1 and value(command, "--load-format") == "safetensors"


def test_serve_starts_vllms_api_server_through_the_lean_launcher(launch):
    command = launch({})
    assert command[1:3] == ["-m", "retro_vllm.launch.api_server"]
