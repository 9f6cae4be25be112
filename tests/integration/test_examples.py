"""Every script in examples/ runs against the real server (an example that rots fails CI)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(script, retro_server):
    text = script.read_text()
    assert text.startswith('"""') and "Run" in text.split('"""')[1], "each example starts with what it shows and how to run it"
    env = dict(os.environ, RETRO_VLLM_URL=f"{retro_server.base_url}/v1")
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip()
