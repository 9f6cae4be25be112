"""`retrieval: false` behaves exactly like stock vLLM for the same greedy request."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.engine

REQUEST = {
    "model": "SmolLM2-135M-Instruct",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Name three primary colours."},
    ],
    "temperature": 0,
    "max_tokens": 48,
    "seed": 0,
}


def test_retrieval_false_matches_stock_vllm(retro_server, stock_server):
    ours = httpx.post(
        f"{retro_server.base_url}/v1/chat/completions", json={**REQUEST, "retro": {"retrieval": False}}, timeout=300
    ).json()
    stock = httpx.post(f"{stock_server.base_url}/v1/chat/completions", json=REQUEST, timeout=300).json()
    assert "retro" not in stock  # the stock server really runs without the plugin
    for choice in ours["choices"]:
        assert choice["message"].pop("annotations") == []
    for choice in stock["choices"]:
        choice["message"].pop("annotations", None)
    assert ours["choices"] == stock["choices"]
    assert ours["usage"] == stock["usage"]
    assert ours["model"] == stock["model"]
