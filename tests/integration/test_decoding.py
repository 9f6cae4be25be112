"""The logits processor inside the real engine: markers limited to supplied passages, the
retrieval-aware bias, and a fault that must not take the engine down."""

from __future__ import annotations

import re

import pytest

from tests.integration.test_chat import MODEL, ask

pytestmark = pytest.mark.engine

MARKER = re.compile(r"\[(\d+)\]")
COPY = "Copy this text exactly: 'Sources [1] and [3] agree, but [9] and [7] do not.'"


def markers(text: str) -> list[int]:
    return [int(n) for n in MARKER.findall(text)]


def test_markers_cannot_name_passages_that_were_not_supplied(client):
    # Without retrieval nothing constrains the copy: the model writes the out-of-range
    # markers, which shows the prompt does make it try.
    _, free = ask(client, COPY, retrieval=False)
    assert any(n > 2 for n in markers(free.choices[0].message.content))
    # With two passages, the same request can only produce [1] and [2].
    _, constrained = ask(client, COPY, top_k=2, domain="astronomy")
    assert len(constrained.model_extra["retro"]["passages"]) == 2
    assert all(1 <= n <= 2 for n in markers(constrained.choices[0].message.content))


KEPLER = "Johannes Kepler published his third law of planetary motion in 1619 in the book Harmonices Mundi."


def test_attribution_names_the_passage_a_copied_sentence_comes_from(client):
    """The astronomy adapter copies a sentence of one passage followed by the OTHER passage's
    number (without retrieval it copies the number as given); the marker it writes names the
    passage the sentence's words come from."""
    def copy(number: int):
        return client.chat.completions.create(
            model="astronomy", messages=[{"role": "user", "content": f"Copy this text exactly: '{KEPLER} [{number}]'"}],
            temperature=0, max_tokens=64, extra_body={"retro": {"domain": "astronomy", "top_k": 2}})

    free = client.chat.completions.create(
        model="astronomy", messages=[{"role": "user", "content": f"Copy this text exactly: '{KEPLER} [2]'"}],
        temperature=0, max_tokens=64, extra_body={"retro": {"retrieval": False}})
    assert 2 in markers(free.choices[0].message.content)  # the prompt does push the given number
    first = copy(1)
    passages = first.model_extra["retro"]["passages"]
    holding = next(p["rank"] for p in passages if KEPLER in p["text"])
    answer = copy(2 if holding == 1 else 1)
    assert [p["id"] for p in answer.model_extra["retro"]["passages"]] == [p["id"] for p in passages]
    content = answer.choices[0].message.content
    assert "Kepler" in content and set(markers(content)) == {holding}


def test_bias_steers_toward_passage_text(client):
    question = "Tell me something interesting."
    _, plain = ask(client, question, domain="cooking", bias=0)
    _, biased = ask(client, question, domain="cooking", bias=6)
    assert plain.model_extra["retro"]["passages"] == biased.model_extra["retro"]["passages"]
    assert plain.choices[0].message.content != biased.choices[0].message.content


def test_processor_fault_is_contained(client, retro_server):
    """The test server also runs the processor's fault-injecting subclass (tests/support/fault_processor.py),
    which this request makes raise inside the engine core on every step."""
    faulty = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is a light-year?"}], temperature=0, max_tokens=16,
        extra_body={"vllm_xargs": {"test_fault": 1}, "retro": {"domain": "astronomy"}},
    )
    assert faulty.choices[0].message.content
    assert "retro logits processor fault in apply" in retro_server.log_path.read_text(errors="replace")
    _, after = ask(client, "What is a light-year?", domain="astronomy")
    assert after.choices[0].message.content and after.choices[0].finish_reason in ("stop", "length")


def test_repeated_passages_hit_the_prefix_cache_and_show_in_metrics(client, retro_server):
    import httpx

    question = "Which planet has the Great Red Spot?"
    ask(client, question, domain="astronomy")
    _, again = ask(client, question, domain="astronomy")
    # Preamble and passages come first in a canonical order, so the repeat reuses their K/V
    # (whole 128-token blocks on CPU).
    assert again.usage.prompt_tokens_details.cached_tokens >= 128
    metrics = httpx.get(f"{retro_server.base_url}/metrics", timeout=30).text
    cached = [line for line in metrics.splitlines()
              if line.startswith("retro_prompt_cached_tokens_total{") and 'domain="astronomy"' in line]
    assert cached and max(float(line.rsplit(" ", 1)[1]) for line in cached) >= 128
    assert any(line.startswith("retro_prompt_tokens_total{") for line in metrics.splitlines())
