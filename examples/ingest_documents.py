"""Add your own documents to a running server, ask about them, then remove them.

The documents go in over HTTP (`POST /v1/retro/documents`); the server builds a new index
version and answers from it at once, no restart. The same works from the command line:
`retro-vllm index my-docs/ --domain networking` (files or folders: .txt .md .html .pdf .jsonl).

Run (with `retro-vllm serve` running):  python examples/ingest_documents.py
"""

import os

import httpx
from openai import OpenAI

base_url = os.environ.get("RETRO_VLLM_URL", "http://127.0.0.1:8000/v1")
server = base_url.removesuffix("/v1")

document = {
    "id": "runbook/vpn-outage",
    "title": "Runbook: office VPN outage",
    "url": "https://wiki.example.com/runbook/vpn-outage",
    "text": "If the office VPN is down, first restart the WireGuard service on gateway gw-2, "
            "then check that UDP port 51820 is open on the firewall. Escalate to the network team after 15 minutes.",
}
added = httpx.post(f"{server}/v1/retro/documents", timeout=120,
                   json={"domain": "networking", "tenant": "example", "documents": [document]})
added.raise_for_status()
print("index version:", added.json()["index_version"], "| documents:", added.json()["documents"])

client = OpenAI(base_url=base_url, api_key="unused")
completion = client.chat.completions.create(
    model="retro",
    messages=[{"role": "user", "content": "The office VPN is down. What should I restart first?"}],
    temperature=0,
    max_tokens=48,
    # Only this tenant's documents: what was just added.
    extra_body={"retro": {"domain": "networking", "filters": {"tenant": "example"}}},
)
message = completion.choices[0].message
print(completion.model, message.content)
for annotation in message.annotations or []:
    print("  cites", annotation.url_citation.url)
print("passages:", [p["id"] for p in completion.model_extra["retro"]["passages"]])

httpx.delete(f"{server}/v1/retro/documents/{document['id']}", timeout=120).raise_for_status()
print("deleted", document["id"])
