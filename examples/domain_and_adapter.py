"""Choose who answers: force a domain, name an adapter, or use the base model.

Shows: `retro.domain` overrides the router; `model="<adapter>"` picks that adapter (its current
version; `name@N` a given version); the base model's name answers without an adapter. The
response's `model`, `retro.adapter` and the `X-Retro-*` headers say who answered.

Run (with `retro-vllm serve` running):  python examples/domain_and_adapter.py
"""

import os

from openai import OpenAI

client = OpenAI(base_url=os.environ.get("RETRO_VLLM_URL", "http://127.0.0.1:8000/v1"), api_key="unused")
question = [{"role": "user", "content": "What happens during a handshake?"}]
for label, model, retro in [
    ("router", "retro", None),
    ("forced domain", "retro", {"domain": "networking"}),
    ("named adapter", "networking", None),
    ("base model", "SmolLM2-135M-Instruct", {"domain": "networking"}),
]:
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=question, temperature=0, max_tokens=32, extra_body={"retro": retro} if retro else None)
    completion = raw.parse()
    info = completion.model_extra["retro"]
    print(f"{label:14} model={completion.model:24} domain={info['domain']} route={info['route']} "
          f"X-Retro-Adapter={raw.headers['X-Retro-Adapter']}")
