"""Bad input gets a 4xx in OpenAI's error shape, and the server answers the next request."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.engine

GOOD = {"model": "SmolLM2-135M-Instruct", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}

CASES = [
    # (name, raw body or JSON, status, code)
    ("malformed JSON", b'{"model": "x", "messages": [', 400, "invalid_json"),
    ("body not an object", b"[1, 2]", 400, "invalid_json"),
    ("retro not an object", {**GOOD, "retro": "astronomy"}, 400, "invalid_retro"),
    ("retro wrong type", {**GOOD, "retro": {"top_k": "three"}}, 400, "invalid_retro"),
    ("retro unknown key", {**GOOD, "retro": {"domian": "astronomy"}}, 400, "invalid_retro"),
    ("unknown domain", {**GOOD, "retro": {"domain": "law"}}, 400, "unknown_domain"),
    ("top_k out of range", {**GOOD, "retro": {"top_k": 1000}}, 400, "invalid_top_k"),
    ("bias out of range", {**GOOD, "retro": {"bias": 50}}, 400, "invalid_bias"),
    ("empty messages", {**GOOD, "messages": []}, 400, "invalid_messages"),
    ("path-like adapter name", {**GOOD, "model": "../../etc/passwd"}, 400, "invalid_model_name"),
    ("absolute path as model", {**GOOD, "model": "/tmp/adapter"}, 400, "invalid_model_name"),
    ("unknown adapter", {**GOOD, "model": "legal@3"}, 404, "model_not_found"),
    ("conversation alone too long", {**GOOD, "messages": [{"role": "user", "content": "word " * 2100}]}, 400,
     "context_length_exceeded"),
    ("body too large", {**GOOD, "messages": [{"role": "user", "content": "x" * 1_100_000}]}, 413, "request_too_large"),
]


@pytest.mark.parametrize("name, body, status, code", CASES, ids=[c[0] for c in CASES])
def test_bad_input_then_success(retro_server, name, body, status, code):
    url = f"{retro_server.base_url}/v1/chat/completions"
    if isinstance(body, bytes):
        response = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=60)
    else:
        response = httpx.post(url, json=body, timeout=60)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["message"]
    follow_up = httpx.post(url, json=GOOD, timeout=300)
    assert follow_up.status_code == 200, follow_up.text
    assert follow_up.json()["choices"][0]["message"]["content"] is not None


def test_request_with_client_sent_retro_xargs_is_served(retro_server):
    body = {**GOOD, "vllm_xargs": {"retro_passages": "evil", "other": 1}}
    response = httpx.post(f"{retro_server.base_url}/v1/chat/completions", json=body, timeout=300)
    assert response.status_code == 200, response.text


def test_too_many_passages_for_the_context_are_dropped_not_refused(retro_server):
    # 16 passages of ~100 tokens plus max_tokens 1500 cannot fit in max_model_len 2048.
    body = {**GOOD, "max_tokens": 1500, "retro": {"top_k": 16}}
    response = httpx.post(f"{retro_server.base_url}/v1/chat/completions", json=body, timeout=300)
    assert response.status_code == 200, response.text
    retro = response.json()["retro"]
    assert retro["dropped"] and all(d["reason"] == "context_length" for d in retro["dropped"])
    assert len(retro["passages"]) + len(retro["dropped"]) == 16
    assert [p["rank"] for p in retro["passages"]] == list(range(1, len(retro["passages"]) + 1))
    assert min(p["score"] for p in retro["passages"]) >= max(d["score"] for d in retro["dropped"])
