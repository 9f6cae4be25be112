"""Every script in examples/ runs against the real server (an example that rots fails CI)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.py"))
# LlamaIndex lives in its own environment (see tests/integration/test_llamaindex.py).
LLAMAINDEX_PYTHON = Path(os.environ.get("RETRO_LLAMAINDEX_PYTHON", REPO / ".venv-llamaindex" / "bin" / "python"))


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(script, retro_server):
    text = script.read_text()
    assert text.startswith('"""') and "Run" in text.split('"""')[1], "each example starts with what it shows and how to run it"
    env = dict(os.environ, RETRO_VLLM_URL=f"{retro_server.base_url}/v1")
    python = str(LLAMAINDEX_PYTHON) if script.stem.startswith("llamaindex") else sys.executable
    result = subprocess.run([python, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip()
