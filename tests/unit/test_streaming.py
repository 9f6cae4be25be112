import asyncio
import json

from retro_vllm.rag.cite import annotate_stream
from retro_vllm.retrieval.types import Chunk, Passage

P = [Passage(rank=1, chunk=Chunk(id="a#0", doc_id="a", text="t", domain="d", title="A", url="https://e/a"),
             score=1.0, stage="dense", scores={})]


def run(events, chat=True):
    async def collect():
        async def source():
            for event in events:
                yield event
        return [e async for e in annotate_stream(source(), {"domain": "d"}, lambda i: P, chat=chat)]
    return asyncio.run(collect())


def sse(obj):
    return f"data: {json.dumps(obj)}\n\n"


def test_chat_stream_gets_retro_first_and_annotations_on_finish():
    out = run([
        sse({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}),
        sse({"choices": [{"index": 0, "delta": {"content": "Yes "}, "finish_reason": None}]}),
        sse({"choices": [{"index": 0, "delta": {"content": "[1]"}, "finish_reason": None}]}),
        sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        sse({"choices": [], "usage": {"total_tokens": 3}}),
        "data: [DONE]\n\n",
    ])
    chunks = [json.loads(e[6:]) for e in out[:-1]]
    assert chunks[0]["retro"] == {"domain": "d"}
    assert "retro" not in chunks[1] and "retro" not in chunks[2]
    final = chunks[3]["choices"][0]["delta"]["annotations"]
    assert final[0]["url_citation"]["start_index"] == 4 and final[0]["url_citation"]["end_index"] == 7
    assert chunks[3]["retro"] == {"domain": "d"}
    assert chunks[4]["usage"] == {"total_tokens": 3}
    assert out[-1] == "data: [DONE]\n\n"


def test_completion_stream_annotations_on_the_choice():
    out = run([
        sse({"choices": [{"index": 0, "text": "see [1]", "finish_reason": None}]}),
        sse({"choices": [{"index": 0, "text": ".", "finish_reason": "length"}]}),
    ], chat=False)
    last = json.loads(out[-1][6:])
    assert last["choices"][0]["annotations"][0]["url_citation"]["url"] == "https://e/a"


def test_non_json_events_pass_through():
    assert run([": keep-alive\n\n", "data: {broken\n\n"]) == [": keep-alive\n\n", "data: {broken\n\n"]
