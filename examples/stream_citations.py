"""Stream an answer and collect its citations from the final chunk.

Shows: the first chunk carries `retro` (the passages), the chunk with `finish_reason` carries
`delta.annotations` (all of them, offsets into the whole streamed text).

Run (with `retro-vllm serve` running):  python examples/stream_citations.py
"""

import os

from openai import OpenAI

client = OpenAI(base_url=os.environ.get("RETRO_VLLM_URL", "http://127.0.0.1:8000/v1"), api_key="unused")
stream = client.chat.completions.create(
    model="retro",
    messages=[{"role": "user", "content": "Why should raw chicken be cooked to 74 C?"}],
    temperature=0,
    max_tokens=64,
    stream=True,
)
text, annotations, passages = "", [], []
for chunk in stream:
    extra = chunk.model_extra or {}
    if "retro" in extra and not passages:
        passages = extra["retro"]["passages"]
    for choice in chunk.choices:
        text += choice.delta.content or ""
        if choice.finish_reason:
            annotations = (choice.delta.model_extra or {}).get("annotations") or []
print(text)
print(f"{len(passages)} passages, {len(annotations)} citations")
for annotation in annotations:
    cite = annotation["url_citation"]
    print(f"  {text[cite['start_index']:cite['end_index']]} -> {cite['url']}")
