"""The contract of one adapter method: what every module of this folder implements.

A method is one peft tuner that `retro-vllm train --type NAME` trains. Its module holds all
that is particular to it, in the same order in each: the settings it reads and the peft config
it builds, what it adds to the shared training loop (train_lora.py), the checks a folder of it
passes at registration (with its conversion), and how vLLM serves what was registered.

Code outside this folder never compares method names: it asks the method object,
`METHODS[manifest.type]` (methods/__init__.py), e.g. `.served_as` or `.uses_lora_slot`.
Importing a method module imports no peft, transformers or vLLM: they are imported inside the
members that need them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from retro_vllm.adapters.checks import Prepared, check_lora, check_stored_lora, check_targets_served, read_source
from retro_vllm.adapters.convert import ConversionError, LoraAdapter

if TYPE_CHECKING:
    from retro_vllm.adapters.methods.config import TrainingConfig
    from retro_vllm.adapters.registry import AdapterManifest

ServedAs = Literal["lora", "prompt_embeds", "refused"]
"""How a registered adapter reaches the engine: "lora" in a vLLM LoRA slot (a plain LoRA, or
one it is converted to at registration); "prompt_embeds", its soft prompt put before the prompt
as prompt embeddings (the API server's prompt_adapters.py); "refused", never registered."""


class MethodError(ValueError):
    """A method setting that cannot be trained or could never be served."""


class AdapterMethod(Protocol):
    """One peft method. Each module defines a class that subclasses this one (for its defaults)
    and one instance of it, which is what `METHODS` holds. Members hold no state: one instance
    serves every run, registration and request, from any thread."""

    name: str
    """The manifest's `type`, the `--type` of `retro-vllm train`, the key in `METHODS`."""

    peft_type: str
    """adapter_config.json's `peft_type` for a folder of this method, as peft writes it."""

    served_as: ServedAs

    learning_rate: float
    """The AdamW learning rate `retro-vllm train` uses when none is given: one that trains this
    method in a few epochs on the demo data (scaling vectors and virtual tokens need larger
    steps than low-rank matrices)."""

    fields: frozenset[str]
    """The TrainingConfig fields only this method reads. The others' are left out of its
    training record; every field no method claims shapes every run."""

    @property
    def uses_lora_slot(self) -> bool:
        """vLLM serves it in a LoRA slot: the server's --max-lora-rank applies, and vLLM's LoRA
        resolver may hand it out."""
        return self.served_as == "lora"

    @property
    def registrable(self) -> bool:
        """The registry takes adapters of this method (it refuses one that trains but could
        never be served faithfully)."""
        return self.served_as != "refused"

    # -- training ---------------------------------------------------------------------
    def peft_config(self, settings: TrainingConfig, *, total_steps: int, model_config: dict[str, Any]) -> Any:
        """The peft config that trains `settings` for `total_steps` optimizer steps on the model
        whose config.json is `model_config`. Raises MethodError for a setting that cannot be
        trained here or could never be served, before any model is loaded."""
        ...

    def fingerprint(self, total_steps: int) -> dict[str, Any]:
        """What a checkpoint must share with the run resuming it, beyond the training record
        and the data. By default nothing: the step budget may grow (train 2 steps, resume to 4)."""
        return {}

    def after_step(self, model: Any, step: int) -> None:
        """Called after each optimizer step, before the gradients are cleared; `step` counts
        from 0. By default nothing."""

    def trainer_state(self, model: Any) -> Any:
        """What the method keeps beside the weights and the optimizer, saved in each checkpoint
        (plain tensors, dicts and lists: torch.load reads it with weights_only). None: nothing."""
        return None

    def restore_trainer_state(self, model: Any, saved: Any) -> None:
        """Put back what `trainer_state` saved, when a run resumes. By default nothing."""

    # -- conversion -------------------------------------------------------------------
    def to_lora(self, config: dict[str, Any], tensors: dict[str, Any], base_model_path: Path | None) -> LoraAdapter:
        """The plain LoRA that serves this adapter exactly, in memory (float32), from its
        adapter_config.json (`config`) and weights (`tensors`); `base_model_path` is the base
        model's folder, for a conversion that reads the base weights (or None). Raises
        ConversionError saying which part cannot be a LoRA and why. By default: no conversion."""
        raise ConversionError(f"no LoRA conversion for peft_type {self.peft_type}")

    # -- registration -----------------------------------------------------------------
    def prepare(self, source: Path, config: dict[str, Any], base_model_path: Path | None) -> Prepared:
        """Check the peft folder `source` of this method (its adapter_config.json already read
        into `config`): its weights against its config and, with `base_model_path`, against
        the base model; then convert it to what is served. Nothing is written: the registry
        writes `Prepared` into its staging folder. `Prepared.method` holds the method's own
        facts for the manifest (`served_as`, `exact`, ...). Raises ValueError (ConversionError
        is one) with one line saying what is wrong."""
        ...

    # -- serving ----------------------------------------------------------------------
    def check_stored(self, manifest: AdapterManifest, config: dict[str, Any]) -> None:
        """At every load (AdapterRegistry.verify), after the files' checksums: the stored
        adapter_config.json (`config`) is what the manifest says was registered. Raises
        ValueError with one line, which the registry prefixes with the adapter's name."""
        ...


class ConvertedToLoRA(AdapterMethod):
    """A method served in a LoRA slot as the plain LoRA `to_lora` converts it to (AdaLoRA, IA3):
    registration checks the targets it names, converts, and holds the LoRA to every check a
    plain one passes; the stored folder is that LoRA."""

    served_as: ServedAs = "lora"

    def prepare(self, source: Path, config: dict[str, Any], base_model_path: Path | None) -> Prepared:
        base, tensors = read_source(source, base_model_path)
        if isinstance(config.get("target_modules"), list):
            check_targets_served(config.get("target_modules") or [])
        converted = self.to_lora(config, tensors, base_model_path)
        rank, targets = check_lora(converted.tensors, converted.config, base)
        return Prepared(type=self.name, rank=rank, alpha=int(converted.config["lora_alpha"]), targets=targets,
                        method=dict(converted.method), converted=converted)

    def check_stored(self, manifest: AdapterManifest, config: dict[str, Any]) -> None:
        check_stored_lora(manifest, config)
