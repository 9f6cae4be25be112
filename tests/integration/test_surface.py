"""The rest of the OpenAI surface: streams, legacy completions, model listing, the
/v1/retro/* routes, and the stock routes README says stay stock."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest

from tests.integration.test_chat import MODEL, check_annotations

pytestmark = pytest.mark.engine


def stream_chat(client, prompt: str, **kwargs):
    return client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": prompt}], temperature=0, max_tokens=48, stream=True, **kwargs
    )


def test_chat_stream_carries_retro_first_and_annotations_on_finish(client):
    raw = client.chat.completions.with_raw_response.create(
        model="retro", messages=[{"role": "user", "content": "Copy this text exactly: 'The port is 443 [2]. Kepler [1] said so.'"}],
        temperature=0, max_tokens=48, stream=True, stream_options={"include_usage": True},
        extra_body={"retro": {"domain": "networking"}},
    )
    assert raw.headers["X-Retro-Domain"] == "networking"
    chunks = list(raw.parse())
    assert chunks[0].model_extra["retro"]["domain"] == "networking"
    passages = {p["rank"]: p for p in chunks[0].model_extra["retro"]["passages"]}
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishing) == 1
    annotations = finishing[0].choices[0].delta.model_extra["annotations"]
    assert finishing[0].model_extra["retro"]["passages"] == chunks[0].model_extra["retro"]["passages"]
    markers = [m for m in re.finditer(r"\[(\d+)\]", content) if int(m.group(1)) in passages]
    assert len(annotations) == len(markers) >= 1, content
    for annotation, marker in zip(annotations, markers):
        span = annotation["url_citation"]
        assert content[span["start_index"]:span["end_index"]] == marker.group(0)
        assert span["url"] == passages[int(marker.group(1))]["url"]
    # no annotations anywhere else in the stream
    assert sum("annotations" in (c.choices[0].delta.model_extra or {}) for c in chunks if c.choices) == 1
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def running_requests(base_url: str) -> float:
    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("vllm:num_requests_running")]
    return sum(values)


def test_client_disconnect_mid_stream_frees_the_engine_request(retro_server):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Write a very long story about the sea."}],
            "max_tokens": 1500, "min_tokens": 1500, "stream": True, "temperature": 0}
    seen_running = False
    with httpx.stream("POST", f"{retro_server.base_url}/v1/chat/completions", json=body, timeout=300) as response:
        # The gauge follows the engine's step stats; read on until it shows this request.
        for n, _ in enumerate(response.iter_lines()):
            if n % 10 == 0 and running_requests(retro_server.base_url) >= 1:
                seen_running = True
                break
            if n > 1000:
                break
    assert seen_running
    deadline = time.monotonic() + 60
    while running_requests(retro_server.base_url) > 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert running_requests(retro_server.base_url) == 0


def test_completions_string_prompt_with_citations(client):
    raw = client.completions.with_raw_response.create(
        model="retro", prompt="Copy this text exactly: 'The port is 443 [2]. Kepler [1] said so.'\n", max_tokens=40,
        temperature=0, extra_body={"retro": {"domain": "networking"}},
    )
    completion = raw.parse()
    retro = completion.model_extra["retro"]
    assert raw.headers["X-Retro-Domain"] == "networking"
    assert retro["retrieval"] == "ok" and len(retro["passages"]) == 4
    passages = {p["rank"]: p for p in retro["passages"]}
    text = completion.choices[0].text
    for annotation in completion.choices[0].model_extra["annotations"]:
        span = annotation["url_citation"]
        assert passages[int(text[span["start_index"] + 1:span["end_index"] - 1])]["url"] == span["url"]


def test_completions_list_prompt_retrieves_per_prompt(client):
    completion = client.completions.create(
        model=MODEL, prompt=["How is bread dough kneaded?", "What is a light-year?"], max_tokens=8, temperature=0,
    )
    retro = completion.model_extra["retro"]
    assert [p["index"] for p in retro["prompts"]] == [0, 1]
    assert retro["prompts"][0]["passages"][0]["domain"] == "cooking"
    assert any(p["domain"] == "astronomy" for p in retro["prompts"][1]["passages"])
    assert len(completion.choices) == 2


def test_completions_token_ids_pass_through_without_retrieval(client):
    completion = client.completions.create(model=MODEL, prompt=[1, 4093, 28, 2], max_tokens=4, temperature=0)
    assert completion.model_extra["retro"]["retrieval"] == "disabled"
    assert completion.model_extra["retro"]["passages"] == []
    assert completion.choices[0].model_extra["annotations"] == []


def test_completion_stream_annotations_on_the_finishing_choice(client):
    chunks = list(client.completions.create(
        model=MODEL, prompt="Copy this text exactly: 'The port is 443 [2].'\n", max_tokens=30, temperature=0, stream=True,
    ))
    assert "retro" in chunks[0].model_extra
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert "annotations" in finishing[0].choices[0].model_extra


def test_models_lists_retro_and_the_base_model(client):
    ids = [m.id for m in client.models.list().data]
    assert ids[0] == "retro" and MODEL in ids


def test_domains_route(retro_server):
    data = httpx.get(f"{retro_server.base_url}/v1/retro/domains", timeout=30).json()
    assert {d["name"]: d["passages"] for d in data["data"]} == {"astronomy": 60, "cooking": 60, "networking": 60}


def test_search_route_returns_contract_passages(retro_server):
    url = f"{retro_server.base_url}/v1/retro/search"
    data = httpx.post(url, json={"query": "Which port does HTTPS use?", "domain": "networking", "top_k": 3}, timeout=30).json()
    passages = data["passages"]
    assert [p["rank"] for p in passages] == [1, 2, 3]
    assert [p["score"] for p in passages] == sorted((p["score"] for p in passages), reverse=True)
    assert all(p["domain"] == "networking" and "#" in p["id"] for p in passages)
    assert "443" in " ".join(p["text"] for p in passages)
    bad = httpx.post(url, json={"query": ""}, timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "query"
    bad = httpx.post(url, json={"query": "x", "domain": "law"}, timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "unknown_domain"


def test_n_and_logprobs_work_with_citations(client):
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is DNS?"}], n=2, max_tokens=16, temperature=0.8,
        logprobs=True, top_logprobs=2, seed=1,
    )
    assert len(completion.choices) == 2
    for choice in completion.choices:
        assert choice.logprobs.content and isinstance(choice.message.annotations, list)
    check_annotations(completion)


def test_response_format_and_tools_work_with_retrieval(client):
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Give the HTTPS port as JSON."}], max_tokens=64,
        response_format={"type": "json_schema", "json_schema": {"name": "port", "schema": {
            "type": "object", "properties": {"port": {"type": "integer"}}, "required": ["port"],
            "additionalProperties": False}}},
        temperature=0,
    )
    assert isinstance(json.loads(completion.choices[0].message.content)["port"], int)
    assert completion.model_extra["retro"]["passages"]
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is DNS?"}], max_tokens=16, tools=[tool], tool_choice="none",
    )
    assert completion.choices[0].message.content and completion.model_extra["retro"]["passages"]


STOCK_ROUTES = [
    ("/v1/responses", {"model": MODEL, "input": "Say hi", "max_output_tokens": 8}),
    ("/v1/chat/completions/batch", {"model": MODEL, "messages": [[{"role": "user", "content": "Hi"}]], "max_tokens": 4}),
    ("/invocations", {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}),
    ("/v1/messages", {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}),
    ("/tokenize", {"model": MODEL, "prompt": "Hello world"}),
]


@pytest.mark.parametrize("path, body", STOCK_ROUTES, ids=[r[0] for r in STOCK_ROUTES])
def test_other_routes_stay_stock(retro_server, path, body):
    response = httpx.post(f"{retro_server.base_url}{path}", json=body, timeout=300)
    assert response.status_code == 200, response.text
    assert "retro" not in response.json()
    assert "X-Retro-Domain" not in response.headers
