"""Ask a question with the OpenAI SDK and read the citations retro-vllm adds.

Shows: `model="retro"` (the server routes to a domain and its adapter), the answer's
`annotations` (one `url_citation` per [n] marker) and the `retro` object (domain, adapter,
passages).

Run (with `retro-vllm serve` running):  python examples/chat_citations.py
"""

import os

from openai import OpenAI

client = OpenAI(base_url=os.environ.get("RETRO_VLLM_URL", "http://127.0.0.1:8000/v1"), api_key="unused")
completion = client.chat.completions.create(
    model="retro",
    messages=[{"role": "user", "content": "How does a refracting telescope form an image?"}],
    temperature=0,
    max_tokens=64,
)
message = completion.choices[0].message
retro = completion.model_extra["retro"]
print(f"answered by {completion.model} (domain {retro['domain']}, route {retro['route']})")
print(message.content)
for annotation in message.annotations or []:
    cite = annotation.url_citation
    print(f"  {message.content[cite.start_index:cite.end_index]} -> {cite.title} <{cite.url}>")
print("passages:", [p["id"] for p in retro["passages"]])
