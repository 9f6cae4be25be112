"""Turn retrieval off for one request: stock vLLM behaviour (no passages, no citations).

Run (with `retro-vllm serve` running):  python examples/retrieval_off.py
"""

import os

from openai import OpenAI

client = OpenAI(base_url=os.environ.get("RETRO_VLLM_URL", "http://127.0.0.1:8000/v1"), api_key="unused")
completion = client.chat.completions.create(
    model="SmolLM2-135M-Instruct",
    messages=[{"role": "user", "content": "Say hello in five words."}],
    temperature=0,
    max_tokens=16,
    extra_body={"retro": {"retrieval": False}},
)
print(completion.choices[0].message.content)
print("retrieval:", completion.model_extra["retro"]["retrieval"], "| passages:", completion.model_extra["retro"]["passages"])
