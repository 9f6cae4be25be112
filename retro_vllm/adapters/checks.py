"""What an adapter folder must pass: at registration, its weights against its config and the
base model; at every load, its files against the manifest and the server it would serve on.

What is particular to one method lives with it (methods/); here are the checks several share:
the LoRA form (what a LoRA slot takes: a plain LoRA, or AdaLoRA and IA3 converted to one), the
weight file, and the stored folder. A check raises ValueError with one line that says which
part is wrong and why; the registry turns it into AdapterError("rejected").
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from retro_vllm.adapters.convert import CONFIG, VLLM_MAX_RANK, WEIGHTS, LoraAdapter, peft_type, read_tensors

if TYPE_CHECKING:
    from retro_vllm.adapters.methods.base import AdapterMethod
    from retro_vllm.adapters.registry import AdapterManifest

MANIFEST = "manifest.json"  # the registry's record of a version; never copied from a source folder
WEIGHT_SUFFIXES = (".safetensors", ".bin")
# The linear layers vLLM's LoRA slots serve in llama-family models; embeddings and lm_head are
# refused (vLLM 0.32 serves no embedding LoRA for them, and a tied lm_head would change both).
SUPPORTED_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.(?P<part>lora_A|lora_B)\.weight$")
LAYER = re.compile(r"\.layers\.(\d+)\.")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- at registration ------------------------------------------------------------------
@dataclass
class Prepared:
    """A checked adapter, ready to be written: files to copy as they are, or a converted LoRA."""

    type: str
    rank: int
    alpha: int
    targets: list[str]
    method: dict[str, Any]
    copy: list[Path] = field(default_factory=list)
    converted: LoraAdapter | None = None


class BaseModelShape(BaseModel):
    """The layer sizes an adapter must fit, from the base model folder's config.json."""

    layers: int
    hidden_size: int
    shapes: dict[str, tuple[int, int]]  # module -> (out, in), as nn.Linear weights

    @classmethod
    def read(cls, folder: Path) -> "BaseModelShape":
        try:
            config = json.loads((Path(folder) / "config.json").read_text())
            hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
            kv = int(config.get("num_key_value_heads") or heads)
            head_dim = int(config.get("head_dim") or hidden // heads)
            inter = int(config["intermediate_size"])
            layers = int(config["num_hidden_layers"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"cannot read the base model's config.json in {folder} ({exc!r})") from None
        return cls(layers=layers, hidden_size=hidden, shapes={
            "q_proj": (heads * head_dim, hidden), "k_proj": (kv * head_dim, hidden), "v_proj": (kv * head_dim, hidden),
            "o_proj": (hidden, heads * head_dim), "gate_proj": (inter, hidden), "up_proj": (inter, hidden),
            "down_proj": (hidden, inter),
        })


def read_source(source: Path, base_model_path: Path | None) -> tuple[BaseModelShape | None, dict[str, Any]]:
    """(the base model's layer sizes, or None without `base_model_path`; the folder's weights,
    read in full and finite)."""
    base = BaseModelShape.read(base_model_path) if base_model_path is not None else None
    return base, read_weights(source)


def check_targets_served(targets: list[str]) -> None:
    unsupported = sorted(set(targets) - set(SUPPORTED_TARGETS))
    if unsupported:
        raise ValueError(f"target module(s) {', '.join(unsupported)} are not served by vLLM's LoRA for this model "
                         f"(supported: {', '.join(SUPPORTED_TARGETS)})")


def _pattern_value(pattern: dict[str, Any], module: str) -> Any:
    # vLLM's and peft's rule: a key matches a suffix of the module name at a "." boundary.
    for key, value in (pattern or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return None


def served_rank(config: dict[str, Any]) -> int:
    """The rank vLLM checks against --max-lora-rank: the largest of r and rank_pattern."""
    return max([int(config.get("r", -1)), *(int(v) for v in (config.get("rank_pattern") or {}).values())])


def read_weights(source: Path) -> dict[str, Any]:
    path = source / WEIGHTS
    if not path.is_file():
        pickled = [p.name for p in source.glob("*.bin")]
        hint = f" ({', '.join(pickled)} is a pickle: save with safetensors)" if pickled else ""
        raise ValueError(f"no {WEIGHTS}{hint}")
    try:
        tensors = read_tensors(path)
    except Exception as exc:  # safetensors raises its own error types for every kind of damage
        raise ValueError(f"{WEIGHTS} is not a readable safetensors file, truncated or corrupt ({exc})") from None
    if not tensors:
        raise ValueError(f"{WEIGHTS} holds no tensors")
    bad = sorted(k for k, t in tensors.items() if t.is_floating_point() and not bool(t.isfinite().all()))
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise ValueError(f"{WEIGHTS} holds NaN or infinite values in {bad[0]}{more}")
    return tensors


def check_lora(tensors: dict[str, Any], config: dict[str, Any], base: BaseModelShape | None) -> tuple[int, list[str]]:
    """(served rank, target modules) of a plain peft LoRA that vLLM can load for this base model."""
    targets = config.get("target_modules")
    if not isinstance(targets, list) or not targets:
        raise ValueError("adapter_config.json must list target_modules by name (a regex is not accepted)")
    check_targets_served(targets)
    rank = served_rank(config)
    if not 1 <= rank <= VLLM_MAX_RANK:
        raise ValueError(f"rank {rank} is outside vLLM's LoRA ranks 1..{VLLM_MAX_RANK}")
    if config.get("use_dora") or config.get("lora_bias") or str(config.get("bias", "none")) != "none":
        raise ValueError("DoRA and trained biases are not served by vLLM's LoRA slots")
    for key, tensor in tensors.items():
        match = LORA_KEY.match(key)
        if not match:
            what = "an embedding LoRA" if "lora_embedding" in key else "a tensor that is no LoRA factor"
            raise ValueError(f"{WEIGHTS} holds {what} ({key}), which vLLM's LoRA does not serve for this model")
        module = match.group("module")
        leaf = module.rsplit(".", 1)[-1]
        if leaf not in targets:
            raise ValueError(f"{WEIGHTS} holds weights for {leaf} ({key}), which adapter_config.json does not target")
        if base is None:
            continue
        layer = LAYER.search(f".{module}.")
        if layer and int(layer.group(1)) >= base.layers:
            raise ValueError(f"{key} is for layer {layer.group(1)}, the base model has {base.layers} layers "
                             "(trained for another model)")
        out_dim, in_dim = base.shapes[leaf]
        r = _pattern_value(config.get("rank_pattern") or {}, module) or int(config["r"])
        expected = (int(r), in_dim) if match.group("part") == "lora_A" else (out_dim, int(r))
        if tuple(tensor.shape) != expected:
            raise ValueError(f"{key} has shape {tuple(tensor.shape)}, expected {expected} for rank {r} on this base "
                             "model (the weights do not match adapter_config.json, or the adapter is for another model)")
    return rank, sorted(targets)


# -- at every load ----------------------------------------------------------------------
def verify_folder(manifest: AdapterManifest, folder: Path, method: AdapterMethod | None, *,
                  base_model: str | None = None, max_rank: int | None = None) -> None:
    """Raises ValueError unless the files in `folder` are the ones the manifest lists and the
    adapter fits a server of `base_model` with --max-lora-rank `max_rank` (None: any).
    `method` is METHODS[manifest.type], None for a type no method has."""
    label = manifest.served_name
    if base_model is not None and manifest.base_model != base_model:
        raise ValueError(f"adapter {label} was trained for {manifest.base_model!r}, this server serves {base_model!r}")
    if method is None:
        raise ValueError(f"adapter {label} has type {manifest.type!r}, which no method of this version serves")
    if method.uses_lora_slot and max_rank is not None and manifest.rank > max_rank:
        raise ValueError(f"adapter {label} has rank {manifest.rank}, above this server's --max-lora-rank {max_rank}")
    unsupported = sorted(set(manifest.targets) - set(SUPPORTED_TARGETS))
    if unsupported:
        raise ValueError(f"adapter {label} targets {', '.join(unsupported)}, which vLLM's LoRA does not serve for "
                         f"this model (supported: {', '.join(SUPPORTED_TARGETS)})")
    if not any(name.endswith(WEIGHT_SUFFIXES) for name in manifest.files):
        raise ValueError(f"adapter {label}: the manifest lists no weight file")
    for name, expected in manifest.files.items():
        path = folder / name
        if not path.is_file():
            raise ValueError(f"adapter {label}: {name} is missing")
        if sha256_file(path) != expected:
            raise ValueError(f"adapter {label}: {name} does not match its checksum (corrupt or altered)")
    try:
        config = json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"adapter {label}: adapter_config.json unreadable ({exc})") from None
    try:
        method.check_stored(manifest, config)
    except ValueError as exc:
        raise ValueError(f"adapter {label}: {exc}") from None


def check_stored_lora(manifest: AdapterManifest, config: dict[str, Any]) -> None:
    """A LoRA slot's folder holds a plain LoRA of the manifest's rank and targets."""
    if (peft_type(config) != "LORA" or served_rank(config) != manifest.rank
            or sorted(config.get("target_modules") or []) != sorted(manifest.targets)):
        raise ValueError("adapter_config.json does not match the manifest (rank or target modules)")
