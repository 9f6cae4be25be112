"""A GGUF file's tensors under the Hugging Face names of its architecture.

One reading of GGUF weights, shared by the safetensors conversion (`default_model`) and the
`retro-gguf` vLLM loader (`gguf_loader`): both see the same names and the same values, so a
model served from the GGUF equals the converted checkpoint. Names come from gguf's own table
(the one llama.cpp's converter writes them by), llama.cpp's layout fixes (the Q/K row
permutation) are undone by transformers' GGUF tensor processors, the code its
`from_pretrained(gguf_file=...)` runs; this module walks the file one tensor at a time.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# The file in a model folder that names the GGUF holding the folder's weights.
GGUF_POINTER = "retro_gguf.json"
LOAD_FORMAT = "retro-gguf"  # the vLLM load format gguf_loader registers


class GGUFWeightsError(RuntimeError):
    """The GGUF cannot be read as the configured architecture."""


def write_pointer(folder: Path, gguf_path: Path) -> None:
    (Path(folder) / GGUF_POINTER).write_text(json.dumps({"gguf": str(Path(gguf_path).resolve())}) + "\n")


def read_pointer(folder: str | Path) -> Path:
    """The GGUF a model folder names; a relative path counts from the folder."""
    pointer = Path(folder) / GGUF_POINTER
    try:
        target = Path(json.loads(pointer.read_text())["gguf"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GGUFWeightsError(f"{pointer}: expected {{\"gguf\": \"<path to .gguf>\"}} ({exc})") from exc
    target = target if target.is_absolute() else pointer.parent / target
    if not target.is_file():
        raise GGUFWeightsError(f"{pointer} names {target}, which is not a file")
    return target


class GGUFWeights:
    """`(hf_name, float32 tensor)` pairs of a GGUF, in file order, dequantized one at a time.

    `hf_config` is the transformers config of the model the weights are for: it picks the
    names (through a weightless copy of that model) and the head counts the Q/K fix needs.
    """

    def __init__(self, gguf_path: str | Path, hf_config) -> None:
        import torch
        from gguf import MODEL_ARCH_NAMES, GGUFReader, get_tensor_name_map
        from transformers import AutoModelForCausalLM
        from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor, read_field

        self.path = Path(gguf_path)
        self.reader = GGUFReader(self.path)
        self.architecture = read_field(self.reader, "general.architecture")[0]
        self.processor = TENSOR_PROCESSORS.get(self.architecture, TensorProcessor)(config=hf_config.to_dict())
        # Names only: on the meta device it takes no memory; on a copy because from_config writes
        # into the config it is given, and the loader's belongs to vLLM.
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(copy.deepcopy(hf_config))
        arch = next((a for a, name in MODEL_ARCH_NAMES.items() if name == self.architecture), None)
        if arch is None:
            raise GGUFWeightsError(f"{self.path.name}: gguf {self.architecture!r} is an unknown architecture")
        # gguf's table is the one llama.cpp's converter named the tensors by. One lookup per
        # parameter of the whole model; transformers' get_gguf_hf_weights_map also walks every
        # submodule, rebuilding the table each time (about 6 s for this 30-layer model).
        table = get_tensor_name_map(arch, hf_config.num_hidden_layers)
        self.names: dict[str, str] = {}
        for hf_name in skeleton.state_dict():
            base, dot, suffix = hf_name.rpartition(".")
            base, suffix = (base, dot + suffix) if suffix in ("weight", "bias") else (hf_name, "")
            gguf_name = table.get_name(base)
            if gguf_name is not None:
                self.names[gguf_name + suffix] = hf_name

    def to_hf(self, gguf_name: str, values: np.ndarray) -> tuple[str, np.ndarray] | None:
        """One dequantized GGUF tensor as the model's own: its name, and llama.cpp's layout undone.
        None for a tensor the model has no place for (llama.cpp's precomputed `rope_freqs`), which
        transformers skips too; a parameter left without weights is the loader's to report."""
        result = self.processor.process(weights=values, name=gguf_name, tensor_key_mapping=self.names,
                                        parsed_parameters={"tensors": {}})
        if result.name is None:
            # Processors that merge tensors (MoE experts) stage them in `parsed_parameters` and
            # return no name: that merged layout is transformers', not one vLLM's models load.
            raise GGUFWeightsError(f"{self.architecture}: {gguf_name} is merged with other tensors; not supported")
        hf_name = self.names.get(result.name)
        return None if hf_name is None else (hf_name, result.weights)

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        import torch
        from gguf import dequantize

        for tensor in self.reader.tensors:
            converted = self.to_hf(tensor.name, dequantize(tensor.data, tensor.tensor_type))
            if converted is not None:
                name, values = converted
                # A copy: F32 tensors come back as views of the file's read-only memory map.
                yield name, torch.from_numpy(np.copy(values))
