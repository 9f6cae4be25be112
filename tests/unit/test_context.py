import pytest

from retro_vllm.decoding.prompt import order_passages, system_text
from retro_vllm.retrieval.types import Chunk, ScoredChunk
from retro_vllm.server.context import fit_passages, output_reserve
from retro_vllm.server.errors import RetroHTTPError


def passages():
    hits = [ScoredChunk(Chunk(id=f"{d}#0", doc_id=d, text="w " * 10, domain="x", title=d), s)
            for d, s in [("a", 0.9), ("b", 0.2), ("c", 0.5)]]
    return order_passages(hits)


def count_words(text: str) -> int:
    return len(text.split())


def render(kept):
    return system_text("P", kept) + "\n\nquestion here"


def test_everything_fits_nothing_dropped():
    prompt, kept, dropped = fit_passages(passages(), render, count_words, budget=10_000)
    assert [p.chunk.id for p in kept] == ["a#0", "b#0", "c#0"] and dropped == []


def test_lowest_scored_dropped_first_and_kept_renumbered():
    full = count_words(render(passages()))
    prompt, kept, dropped = fit_passages(passages(), render, count_words, budget=full - 1)
    assert [p.chunk.id for p in dropped] == ["b#0"]
    assert [(p.rank, p.chunk.id) for p in kept] == [(1, "a#0"), (2, "c#0")]
    assert "[2] c" in prompt


def test_conversation_alone_too_long_is_a_400():
    with pytest.raises(RetroHTTPError) as info:
        fit_passages(passages(), render, count_words, budget=2)
    assert info.value.status == 400 and info.value.code == "context_length_exceeded"


def test_output_reserve_prefers_request_values():
    assert output_reserve({"max_tokens": 50}, 256) == 50
    assert output_reserve({"max_completion_tokens": 70, "max_tokens": 50}, 256) == 70
    assert output_reserve({}, 256) == 256
