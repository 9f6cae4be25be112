"""ChatRetroVLLM without a server: a plain vLLM answer (no `retro`) degrades, never crashes."""

import logging

import pytest

langchain_retro_vllm = pytest.importorskip("langchain_retro_vllm")


def test_plain_server_answer_has_no_citations_and_warns(caplog):
    chat = langchain_retro_vllm.ChatRetroVLLM(base_url="http://127.0.0.1:9/v1")
    response = {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hello"}}]}
    with caplog.at_level(logging.WARNING):
        result = chat._create_chat_result(response)
    assert result.generations[0].message.content == "hello"
    assert "citations" not in result.generations[0].message.response_metadata
    assert "no `retro` object" in caplog.text


def test_controls_go_in_the_retro_object():
    chat = langchain_retro_vllm.ChatRetroVLLM(base_url="http://127.0.0.1:9/v1", domain="cooking")
    payload = chat._get_request_payload("hi", top_k=2)
    assert payload["extra_body"] == {"retro": {"domain": "cooking", "top_k": 2}}
    assert payload["model"] == "retro"
