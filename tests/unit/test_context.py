import asyncio

import pytest

from retro_vllm.rag.assemble import fit_passages, output_reserve
from retro_vllm.rag.errors import RetroHTTPError
from retro_vllm.rag.layout import message_text, order_passages, system_text
from retro_vllm.retrieval.types import Chunk, ScoredChunk


def passages():
    hits = [ScoredChunk(Chunk(id=f"{d}#0", doc_id=d, text="w " * 10, domain="x", title=d), s)
            for d, s in [("a", 0.9), ("b", 0.2), ("c", 0.5)]]
    return order_passages(hits)


async def count_words(text: str) -> int:
    return len(text.split())


def fit(*args, **kwargs):
    return asyncio.run(fit_passages(*args, **kwargs))


def render(kept):
    return system_text("P", kept) + "\n\nquestion here"


def test_everything_fits_nothing_dropped():
    prompt, kept, dropped = fit(passages(), render, count_words, budget=10_000)
    assert [p.chunk.id for p in kept] == ["a#0", "b#0", "c#0"] and dropped == []


def test_lowest_scored_dropped_first_and_kept_renumbered():
    full = len(render(passages()).split())
    prompt, kept, dropped = fit(passages(), render, count_words, budget=full - 1)
    assert [p.chunk.id for p in dropped] == ["b#0"]
    assert [(p.rank, p.chunk.id) for p in kept] == [(1, "a#0"), (2, "c#0")]
    assert "[2] c" in prompt


def test_conversation_alone_too_long_is_a_400():
    with pytest.raises(RetroHTTPError) as info:
        fit(passages(), render, count_words, budget=2)
    assert info.value.status == 400 and info.value.code == "context_length_exceeded"


def test_output_reserve_prefers_request_values():
    assert output_reserve({"max_tokens": 50}, 256) == 50
    assert output_reserve({"max_completion_tokens": 70, "max_tokens": 50}, 256) == 70
    assert output_reserve({}, 256) == 256


class FakeState:
    """The server's own tokenizer path: one token per word of the messages."""

    @staticmethod
    def count_chat_tokens(messages):
        return sum(len(message_text(m["content"]).split()) for m in messages)


class FakeRenderer:
    """Stands in for vLLM's OnlineRenderer.render_chat (the real one is exercised against stock
    vLLM in tests/integration/test_stock_parity.py)."""

    def __init__(self, outcome):
        self.outcome = outcome
        self.requests = []

    async def render_chat(self, request):
        self.requests.append(request)
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return [], [{"type": "token", "prompt_token_ids": self.outcome}]


def chat_tokens(outcome, body=None, extra=0):
    from types import SimpleNamespace

    from retro_vllm.rag.assemble import ChatTokens

    app_state = SimpleNamespace(openai_serving_chat=SimpleNamespace(online_renderer=FakeRenderer(outcome)))
    return ChatTokens(FakeState(), app_state, body or {"model": "m"}, extra_tokens=extra)


MESSAGES = [{"role": "user", "content": "three words here"}]


def test_counts_by_vllms_rendering_and_hands_over_those_ids():
    count = chat_tokens([5, 6, 7, 8, 9], extra=2)
    assert asyncio.run(count(MESSAGES)) == 7
    body = {"messages": MESSAGES, "kv_transfer_params": {"other": 1}}
    count.hand_over(body)
    assert body["kv_transfer_params"] == {"other": 1, "prompt_token_ids": [5, 6, 7, 8, 9]}


def test_hands_over_nothing_for_other_messages_echo_or_prompt_text():
    count = chat_tokens([5, 6])
    asyncio.run(count(MESSAGES))
    for body in ({"messages": list(MESSAGES)}, {"messages": MESSAGES, "echo": True},
                 {"messages": MESSAGES, "return_prompt_text": True}, {"messages": MESSAGES, "kv_transfer_params": "x"},
                 {"messages": MESSAGES, "truncate_prompt_tokens": 10},
                 {"messages": MESSAGES, "kv_transfer_params": {"prompt_token_ids": [1]}}):
        before = dict(body)
        count.hand_over(body)
        assert body == before


def test_a_renderer_refusal_falls_back_to_the_servers_tokenizer_and_hands_over_nothing():
    from retro_vllm.compat.serving import VLLMValidationError

    count = chat_tokens(VLLMValidationError("bad tool choice", parameter="tool_choice"))
    assert asyncio.run(count(MESSAGES)) == 3
    body = {"messages": MESSAGES}
    count.hand_over(body)
    assert "kv_transfer_params" not in body


def test_too_long_for_vllm_counts_as_its_reported_length():
    from retro_vllm.compat.serving import VLLMValidationError

    count = chat_tokens(VLLMValidationError("too long", parameter="input_tokens", value=4097))
    assert asyncio.run(count(MESSAGES)) == 4097


def test_messages_with_content_parts_are_counted_by_the_servers_tokenizer():
    count = chat_tokens([5, 6])
    parts = [{"role": "user", "content": [{"type": "text", "text": "two words"}]}]
    assert asyncio.run(count(parts)) == 2
    body = {"messages": parts}
    count.hand_over(body)
    assert "kv_transfer_params" not in body


def test_counts_the_untruncated_prompt_without_a_clients_own_ids():
    body = {"model": "m", "truncate_prompt_tokens": 3, "truncation_side": "left",
            "kv_transfer_params": {"prompt_token_ids": [1, 2], "other": 1}}
    count = chat_tokens([5, 6, 7, 8], body=body)
    assert asyncio.run(count(MESSAGES)) == 4
    (request,) = count.renderer.requests
    assert request.truncate_prompt_tokens is None and request.kv_transfer_params == {"other": 1}
    assert body["kv_transfer_params"] == {"prompt_token_ids": [1, 2], "other": 1}  # the client's request is untouched
