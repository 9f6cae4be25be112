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


def test_retrieved_prompt_tokens_are_the_ones_stock_vllm_renders(retro_server, stock_server, retro_config):
    """retro-vllm counts the fitted prompt with vLLM's own chat rendering and hands vLLM those
    token ids (so it does not render and tokenize them again). They must be exactly the ids stock
    vLLM renders from the same final messages."""
    from retro_vllm.config import load_config

    question = "Which port does HTTPS use?"
    body = {"model": REQUEST["model"], "max_tokens": 1, "temperature": 0, "return_token_ids": True}
    ours = httpx.post(f"{retro_server.base_url}/v1/chat/completions",
                      json={**body, "messages": [{"role": "user", "content": question}]}, timeout=300).json()
    passages = sorted(ours["retro"]["passages"], key=lambda p: p["rank"])
    assert passages, "the question should retrieve passages"
    sources = "\n\n".join(f"[{p['rank']}] {p['title']}\n{p['text']}" for p in passages)
    preamble = load_config(retro_config).serving.preamble
    final = [{"role": "system", "content": f"{preamble}\n\nSources:\n\n{sources}"}, {"role": "user", "content": question}]
    stock = httpx.post(f"{stock_server.base_url}/v1/chat/completions", json={**body, "messages": final}, timeout=300).json()
    assert ours["prompt_token_ids"] and ours["prompt_token_ids"] == stock["prompt_token_ids"]
    assert ours["usage"]["prompt_tokens"] == stock["usage"]["prompt_tokens"] == len(stock["prompt_token_ids"])
