"""What retro-vllm adds to a vLLM launch, whichever way vLLM is started (`retro-vllm serve`, or
`vllm serve MODEL --plugin retro`): engine flags the plugin relies on, and the environment
that turns the plugin on."""

from __future__ import annotations

from retro_vllm import envs
from retro_vllm.config import RetroConfig


def given_flags(args: list[str]) -> set[str]:
    return {a.split("=", 1)[0] for a in args if a.startswith("--")}


def engine_flags(config: RetroConfig, args: list[str]) -> list[str]:
    """Flags to append unless `args` already sets them: one LoRA slot per domain for the domain
    adapters, prompt token details (prefix-cache hits behind retro's metrics), and prompt
    embeddings when prompt-tuning adapters are on."""
    given = given_flags(args)
    out: list[str] = []
    if config.adapters.enabled and config.domains and "--enable-lora" not in given:
        out.append("--enable-lora")
    if "--enable-lora" in given or "--enable-lora" in out:
        for flag, value in (("--max-loras", len(config.domains) or 1), ("--max-lora-rank", config.adapters.max_lora_rank)):
            if flag not in given:
                out += [flag, str(value)]
    if "--enable-prompt-tokens-details" not in given:
        out.append("--enable-prompt-tokens-details")
    if config.adapters.enabled and config.adapters.prompt_embeds and "--enable-prompt-embeds" not in given:
        out.append("--enable-prompt-embeds")  # prompt-tuning adapters go in as prompt embeddings
    return out


def plugin_env(config: RetroConfig, args: list[str]) -> dict[str, str]:
    plugins = envs.VLLM_PLUGINS
    env = {
        # Endpoint plugins load only when named; keep any other plugin the user named.
        "VLLM_PLUGINS": ",".join(plugins if "retro" in plugins else [*plugins, "retro"]),
        "RETRO_VLLM_HOME": str(config.home_dir),
    }
    if config.source is not None:
        env["RETRO_VLLM_CONFIG"] = str(config.source)
    if "--enable-lora" in given_flags(args):
        # Lets vLLM ask the registry resolver for adapter names. It also opens vLLM's load/unload
        # routes, which the retro endpoint replaces with a refusal (only the registry loads).
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "1"
    return env
