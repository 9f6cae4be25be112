"""A prompt-tuning adapter served by the running retro server (soft prompt assembled by the
plugin, client sends text) answers token for token as peft's own generation does with the
same adapter: float32, greedy, one request at a time, on the prompt the server really sent
(preamble and retrieved passages included)."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import httpx
import pytest
import yaml

from tests.conftest import SERVER_ARGS, Server, free_port, server_env

pytestmark = pytest.mark.engine

ADAPTER = "cooking"  # the cooking domain's adapter is a prompt-tuning one; the others stay LoRA
BASE = "SmolLM2-135M-Instruct"
MAX_TOKENS = 16
QUESTIONS = [
    "What is the Maillard reaction?",
    "At what temperature does sugar caramelize?",
    "How much oil must mayonnaise contain?",
    "Why do onions make you cry?",
    "What does baking soda do in a cake?",
    "How do you temper chocolate?",
    "Why is bread dough kneaded?",
    "What makes an emulsion stable?",
    "How long should pasta be cooked?",
    "Why do we rest meat after cooking?",
    "What is the danger zone for food safety?",
    "How does yeast make bread rise?",
    "What is a roux?",
    "Why add salt to pasta water?",
    "What is sous vide cooking?",
    "How do you make a vinaigrette?",
    "What is umami?",
    "Why does bread go stale?",
    "What is blanching?",
    "How do eggs thicken a custard?",
]


@pytest.fixture(scope="module")
def prompt_adapter(model_path, tmp_path_factory):
    """A peft prompt-tuning adapter: initialised from an instruction's token embeddings, then
    moved off them (seeded noise), so its rows are no token's embedding."""
    import torch
    from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    config = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=12,
                                prompt_tuning_init=PromptTuningInit.TEXT, tokenizer_name_or_path=str(model_path),
                                prompt_tuning_init_text="Answer in French, in one short sentence:")
    model = get_peft_model(base, config)
    with torch.no_grad():
        weight = model.prompt_encoder["default"].embedding.weight
        weight.add_(0.02 * torch.randn_like(weight))
    folder = tmp_path_factory.mktemp("prompt-adapter")
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def server(model_path, prompt_adapter, tmp_path_factory):
    """One retro server for the module: the demo config with prompt adapters on, the cooking
    adapter registered as a prompt-tuning one, float32, the citation constraint off (peft has
    no logits processor)."""
    from retro_vllm.adapters.registry import AdapterRegistry
    from retro_vllm.config import load_config, write_demo_config

    path = write_demo_config(tmp_path_factory.mktemp("pt-home"), model_path)
    raw = yaml.safe_load(path.read_text())
    raw.setdefault("adapters", {})["prompt_embeds"] = True
    raw["decoding"] = {"constrain_citations": False}
    path.write_text(yaml.safe_dump(raw))
    manifest = AdapterRegistry(load_config(path).registry_dir).register(
        prompt_adapter, name=ADAPTER, domain="cooking", base_model=BASE, base_model_path=model_path)
    assert manifest.type == "prompt" and manifest.served_name == f"{ADAPTER}@1"
    port = free_port()
    command = [sys.executable, "-m", "retro_vllm.cli", "serve", "--config", str(path), "--port", str(port),
               *SERVER_ARGS, "--dtype", "float32"]
    server = Server("retro-prompt", command, server_env(path.parent), port, tmp_path_factory.mktemp("pt-logs"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def peft_model(model_path, prompt_adapter):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    return tokenizer, PeftModel.from_pretrained(base, prompt_adapter).eval()  # unmerged: peft's own forward


def peft_generate(peft_model, text: str, *, chat: bool, adapter: bool = True) -> str:
    import torch

    tokenizer, model = peft_model
    # As vLLM tokenizes: a rendered chat template carries its own special tokens.
    ids = tokenizer(text, add_special_tokens=not chat, return_tensors="pt")
    with torch.no_grad():
        generator = model if adapter else model.get_base_model()
        out = generator.generate(**ids, max_new_tokens=MAX_TOKENS, do_sample=False)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def sent_system_text(retro: dict) -> str:
    """The system text the server put in front of the conversation, from the passages it reports."""
    from retro_vllm.config import ServingSection
    from retro_vllm.rag.layout import system_text

    passages = [SimpleNamespace(rank=p["rank"], chunk=SimpleNamespace(title=p["title"], text=p["text"]))
                for p in retro["passages"]]
    return system_text(ServingSection().preamble, passages)


def post(server, route: str, body: dict) -> httpx.Response:
    response = httpx.post(f"{server.base_url}/v1/{route}", json={"temperature": 0, "max_tokens": MAX_TOKENS, **body},
                          timeout=300)
    assert response.status_code == 200, response.text
    return response


def test_served_prompt_adapter_matches_peft(server, peft_model):
    tokenizer, _ = peft_model
    mismatches, changed = [], 0
    for n, question in enumerate(QUESTIONS):
        messages = [{"role": "user", "content": question}]
        if n % 3 == 2:  # /v1/completions, the adapter named in `model`
            response = post(server, "completions", {"model": ADAPTER, "prompt": question})
            payload = response.json()
            text = f"{sent_system_text(payload['retro'])}\n\n{question}"
            got, chat = payload["choices"][0]["text"], False
        else:  # chat, routed by domain (`retro` + retro.domain), every other one without retrieval
            retrieval = n % 3 == 0
            response = post(server, "chat/completions", {"model": "retro", "messages": messages,
                                                         "retro": {"domain": "cooking", "retrieval": retrieval}})
            payload = response.json()
            sent = ([{"role": "system", "content": sent_system_text(payload["retro"])}] if retrieval else []) + messages
            text = tokenizer.apply_chat_template(sent, tokenize=False, add_generation_prompt=True)
            got, chat = payload["choices"][0]["message"]["content"], True
        assert payload["model"] == f"{ADAPTER}@1" and payload["retro"]["adapter"] == f"{ADAPTER}@1"
        assert response.headers["X-Retro-Adapter"] == f"{ADAPTER}@1"
        expected = peft_generate(peft_model, text, chat=chat)
        if got != expected:
            mismatches.append((question, got, expected))
        if n < 8:  # the base model's answer, to show the soft prompt matters
            changed += expected != peft_generate(peft_model, text, chat=chat, adapter=False)
    assert not mismatches, json.dumps(mismatches, indent=1)
    # The soft prompt must matter, or equality would not show it was applied.
    assert changed >= 3, f"the adapter changed only {changed} of 8 answers"


def test_streamed_answer_is_the_same(server):
    body = {"model": f"{ADAPTER}@1", "messages": [{"role": "user", "content": QUESTIONS[0]}]}
    whole = post(server, "chat/completions", body).json()
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", timeout=300,
                      json={**body, "temperature": 0, "max_tokens": MAX_TOKENS, "stream": True}) as response:
        assert response.status_code == 200 and response.headers["X-Retro-Adapter"] == f"{ADAPTER}@1"
        chunks = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    assert {c["model"] for c in chunks} == {f"{ADAPTER}@1"}
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == \
        whole["choices"][0]["message"]["content"]


def test_lora_adapters_and_base_model_still_serve(server):
    lora = post(server, "chat/completions", {"model": "astronomy", "messages": [{"role": "user", "content": "What is a comet?"}]})
    assert lora.json()["model"].startswith("astronomy@")
    base = post(server, "chat/completions", {"model": BASE, "messages": [{"role": "user", "content": "Hello"}]})
    assert base.json()["model"] == BASE and base.json()["retro"]["adapter"] is None


def test_client_embeddings_are_refused(server):
    import base64
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(torch.zeros(3, 576), buffer)
    data = base64.b64encode(buffer.getvalue()).decode()
    response = httpx.post(f"{server.base_url}/v1/completions", timeout=60,
                          json={"model": BASE, "prompt_embeds": data, "max_tokens": 2})
    assert response.status_code == 400 and response.json()["error"]["code"] == "prompt_embeds_not_accepted"
    response = httpx.post(f"{server.base_url}/v1/chat/completions", timeout=60, json={
        "model": BASE, "max_tokens": 2,
        "messages": [{"role": "user", "content": [{"type": "prompt_embeds", "data": data}]}]})
    assert response.status_code == 400 and response.json()["error"]["code"] == "prompt_embeds_not_accepted"
