"""Each method vLLM's LoRA slots serve gives peft's own greedy output: AdaLoRA (pruned ranks)
and IA3 on k/v, converted by the registry, and plain LoRA as the control. Both sides in float32,
peft unmerged and one prompt at a time, vLLM one adapter at a time, on the real base model."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import REPO, server_env
from tests.integration.test_gguf_loader import PROMPTS as ALL_PROMPTS

pytestmark = pytest.mark.engine

PROMPTS = ALL_PROMPTS[:18] + ALL_PROMPTS[-2:]  # 18 plain, 2 in the chat template
NEW_TOKENS = 16
# Log-probabilities of the chosen tokens, vLLM vs peft: the same math in another kernel order.
LOGPROB_ATOL = 2e-3

GENERATE = """
import json, sys, time
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt
from vllm.lora.request import LoRARequest

if __name__ == "__main__":
    model, jobs, prompts = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    begin = time.monotonic()
    llm = LLM(model=model, dtype="float32", max_model_len=512, seed=0, enforce_eager=True, enable_lora=True,
              max_lora_rank=256, max_loras=3, lora_target_modules=["qkv_proj", "o_proj"])
    params = SamplingParams(temperature=0, max_tokens=int(sys.argv[4]), ignore_eos=True, logprobs=0)
    results = {"seconds": {"start": time.monotonic() - begin}}
    # vLLM's CPU LoRA ops copy every slot's (out x max_lora_rank) factors per token and layer, so
    # rank 256 is slow: the adapters here stay on attention and the other layers get no LoRA.
    # The base model's output only shows that each adapter acts: one batch is enough.
    base = llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in prompts], params, use_tqdm=False)
    results["base"] = [{"tokens": list(o.outputs[0].token_ids)} for o in base]
    for index, (name, path) in enumerate(jobs):
        lora, begin = LoRARequest(name, index + 1, path), time.monotonic()
        # One adapter at a time, its prompts in one batch: peft's tokens either way (one request at
        # a time was no faster here, the cost is per token).
        outs = llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in prompts], params, lora_request=lora,
                            use_tqdm=False)
        results[name] = [{"tokens": list(o.outputs[0].token_ids),
                          "logprobs": [step[t].logprob for step, t in zip(o.outputs[0].logprobs, o.outputs[0].token_ids)]}
                         for o in outs]
        results["seconds"][name] = time.monotonic() - begin
    print("RESULT " + json.dumps(results))
"""


def randomise(model, std: dict[str, float]) -> None:
    """Non-trivial weights (peft starts LoRA B, AdaLoRA E and IA3 l at values that do nothing)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            for part, scale in std.items():
                if f".{part}." in name:
                    noise = torch.randn(param.shape, generator=generator) * scale
                    param.copy_(1 + noise if part == "ia3_l" else noise)


@pytest.fixture(scope="module")
def adapters(model_path, tmp_path_factory):
    """name -> (peft folder, registry manifest) for the three methods, registered (and converted)
    through the registry."""
    from peft import AdaLoraConfig, IA3Config, LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from retro_vllm.adapters.registry import AdapterRegistry

    begin = time.monotonic()
    root = tmp_path_factory.mktemp("parity")
    registry = AdapterRegistry(root / "registry")
    built = {}
    specs = {
        "lora": (LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
                 {"lora_A": 0.05, "lora_B": 0.05}),
        "adalora": (AdaLoraConfig(init_r=8, target_r=4, total_step=100, lora_alpha=16,
                                  target_modules=["q_proj", "v_proj", "o_proj"]),
                    {"lora_A": 0.05, "lora_B": 0.05, "lora_E": 1.0}),
        "ia3": (IA3Config(target_modules=["k_proj", "v_proj"], feedforward_modules=[]), {"ia3_l": 0.3}),
    }
    for name, (config, std) in specs.items():
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32), config)
        randomise(model, std)
        if name == "adalora":
            with torch.no_grad():  # the rank allocator's pruning: E == 0; every rank of layer 0's o_proj
                for module_name, param in model.named_parameters():
                    if "lora_E" in module_name:
                        param[3:6] = 0.0
                        if ".layers.0.self_attn.o_proj." in module_name:
                            param.zero_()
        folder = root / name
        model.save_pretrained(folder)
        manifest = registry.register(folder, name=name, domain="cooking", base_model="SmolLM2-135M-Instruct",
                                     base_model_path=model_path, type=name)
        built[name] = (folder, manifest, registry.verify(manifest, max_rank=256))
    print(f"adapters built and registered in {time.monotonic() - begin:.0f}s")
    return built


def test_registry_serves_each_method_as_a_lora(adapters):
    assert adapters["adalora"][1].rank == 5 and adapters["adalora"][1].method["pruned_ranks"] > 0
    assert adapters["ia3"][1].rank == 192 and adapters["ia3"][1].targets == ["k_proj", "v_proj"]
    for _, manifest, folder in adapters.values():
        assert json.loads((folder / "adapter_config.json").read_text())["peft_type"] == "LORA"
        assert manifest.method["exact"] is True


def peft_greedy(model_path, adapter_folder, prompts: list[list[int]]) -> list[dict]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model = (PeftModel.from_pretrained(base, adapter_folder) if adapter_folder else base).eval()
    runs = []
    with torch.no_grad():
        for ids in prompts:
            tokens, logprobs = [], []
            out = model(input_ids=torch.tensor([ids]), use_cache=True)
            for _ in range(NEW_TOKENS):
                step = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
                token = int(step.argmax())
                tokens.append(token)
                logprobs.append(float(step[token]))
                out = model(input_ids=torch.tensor([[token]]), past_key_values=out.past_key_values, use_cache=True)
            runs.append({"tokens": tokens, "logprobs": logprobs})
    return runs


@pytest.fixture(scope="module")
def outputs(model_path, adapters, tmp_path_factory):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    prompts = [tokenizer(p, add_special_tokens=False).input_ids for p in PROMPTS]
    jobs = [[name, str(folder)] for name, (_, _, folder) in adapters.items()]
    env = server_env(tmp_path_factory.mktemp("parity-home"))
    env.update(VLLM_ENABLE_V1_MULTIPROCESSING="0")
    run = subprocess.run([sys.executable, "-c", GENERATE, str(model_path), json.dumps(jobs), json.dumps(prompts),
                          str(NEW_TOKENS)], env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    results = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert run.returncode == 0 and results, f"vLLM failed:\n{(run.stdout + run.stderr)[-4000:]}"
    served = json.loads(results[-1].removeprefix("RESULT "))
    begin = time.monotonic()
    reference = {name: peft_greedy(model_path, folder, prompts) for name, (folder, _, _) in adapters.items()}
    print(f"vLLM seconds: {served['seconds']}; peft: {time.monotonic() - begin:.0f}s")
    return served, reference


@pytest.mark.parametrize("method", ["lora", "adalora", "ia3"])
def test_vllm_matches_peft(outputs, method):
    served, reference = outputs
    assert len(served[method]) == len(PROMPTS) >= 20
    assert [r["tokens"] for r in served[method]] == [r["tokens"] for r in reference[method]]
    worst = max(abs(a - b) for s, r in zip(served[method], reference[method])
                for a, b in zip(s["logprobs"], r["logprobs"]))
    print(f"{method}: chosen-token logprobs differ by at most {worst:.2e}")
    assert worst < LOGPROB_ATOL, f"{method}: chosen-token logprobs differ by {worst:.2e}"
    # The adapter really acts: its greedy text differs from the base model's on some prompts.
    changed = sum(s["tokens"] != b["tokens"] for s, b in zip(served[method], served["base"]))
    assert changed >= 5, f"{method} changed only {changed} of {len(PROMPTS)} outputs"
