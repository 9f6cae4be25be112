"""Shared fixtures: one real retro-vllm server per test session (and a stock vLLM server,
started only for the tests that compare against it)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
START_DEADLINE_S = float(os.environ.get("RETRO_TEST_START_DEADLINE", "900"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A server process on loopback; fails fast with its log if it dies while starting."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], port: int, log_dir: Path):
        self.name = name
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(command, env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO)
        self.started_s: float | None = None

    def log_tail(self, lines: int = 80) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def wait_ready(self) -> None:
        begin = time.monotonic()
        while time.monotonic() - begin < START_DEADLINE_S:
            if self.process.poll() is not None:
                pytest.fail(f"{self.name} server exited with {self.process.returncode} while starting:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=2).status_code == 200:
                    self.started_s = time.monotonic() - begin
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        self.stop()
        pytest.fail(f"{self.name} server not ready after {START_DEADLINE_S:.0f}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def server_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        RETRO_VLLM_HOME=str(home),
        VLLM_CPU_KVCACHE_SPACE="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        # The servers' processes import test-only code (tests/support) from the repository.
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
    )
    return env


@pytest.fixture(scope="session")
def model_path() -> Path:
    """The embedded default model, converted once into the user's cache (as `serve` does)."""
    from retro_vllm import envs
    from retro_vllm.models.default_model import ensure_default_model

    return ensure_default_model(envs.RETRO_VLLM_HOME, progress=False)


@pytest.fixture(scope="session")
def retro_config(tmp_path_factory, model_path) -> Path:
    """The demo config, with a fresh home (so the index is built by the server under test)
    and the already-converted model."""
    import yaml

    from retro_vllm.config import write_demo_config
    from retro_vllm.retrieval.stores.faiss_options import FaissOptions

    path = write_demo_config(tmp_path_factory.mktemp("retro-home"), model_path)
    raw = yaml.safe_load(path.read_text())
    raw["retrieval"]["timeout_s"] = 2.0  # the hung-store test waits this long
    # FAISS with faults on demand (tests/support/fault_store.py), plugged in as a store of one's own.
    raw["retrieval"]["backend"] = "tests.support.fault_store:FaultInjectingFaissStore"
    raw["retrieval"]["options"] = FaissOptions.model_validate(raw["retrieval"].pop("faiss", None) or {}).model_dump()
    path.write_text(yaml.safe_dump(raw))
    return path


SERVER_ARGS = ["--max-model-len", "2048", "--seed", "0"]


@pytest.fixture(scope="session")
def retro_server(retro_config, tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    port = free_port()
    command = [sys.executable, "-m", "retro_vllm.cli", "serve", "--config", str(retro_config), "--port", str(port), *SERVER_ARGS,
               # Beside the plugin's own processor: lets a test make one fail inside the engine.
               "--logits-processors", "tests.support.fault_processor:FaultInjectingProcessor"]
    server = Server("retro", command, server_env(retro_config.parent), port, logs)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def client(retro_server):
    from openai import OpenAI

    return OpenAI(base_url=f"{retro_server.base_url}/v1", api_key="unused", max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def stock_server(model_path, tmp_path_factory):
    """Stock vLLM, same model and engine arguments (LoRA slots included, as `retro-vllm serve`
    enables them), without the endpoint plugin."""
    logs = tmp_path_factory.mktemp("stock-logs")
    port = free_port()
    env = server_env(tmp_path_factory.mktemp("stock-home"))
    env.pop("VLLM_PLUGINS", None)  # unset: endpoint plugins do not load
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_path),
        "--served-model-name", "SmolLM2-135M-Instruct", "--host", "127.0.0.1", "--port", str(port), *SERVER_ARGS,
        "--enable-lora", "--max-loras", "3", "--max-lora-rank", "16", "--enable-prompt-tokens-details",
    ]
    server = Server("stock", command, env, port, logs)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
