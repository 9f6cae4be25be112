"""`--load-format retro-gguf`: vLLM reads a model's weights straight from a GGUF file.

vLLM 0.32 no longer loads GGUF. This loader serves a model folder that holds what vLLM reads
besides the weights (config.json, generation_config.json, the tokenizer) and a `retro_gguf.json`
naming the GGUF (`default_model.ensure_gguf_folder` writes such a folder):

    VLLM_PLUGINS=retro python -m vllm.entrypoints.openai.api_server --model FOLDER --load-format retro-gguf

The folder, not `--model-loader-extra-config`, names the file, so the folder alone is the model,
whichever launcher starts vLLM. Weights are dequantized one tensor at a time and rounded to the
dtype config.json declares, as a converted checkpoint stores them: both give vLLM the same
parameters, at any `--dtype`. The general plugin registers the loader in every vLLM process.
"""

from __future__ import annotations

import logging
import time

import torch

from retro_vllm.compat.loader import BaseModelLoader, register_model_loader
from retro_vllm.models.gguf_weights import (
    GGUF_POINTER,
    LOAD_FORMAT,
    GGUFWeights,
    read_pointer,
)

# Under vLLM's logger tree, so the timing lands in vLLM's log beside its own loaders' lines.
logger = logging.getLogger(f"vllm.{__name__}")


class GGUFModelLoader(BaseModelLoader):
    def __init__(self, load_config) -> None:
        super().__init__(load_config)
        if load_config.model_loader_extra_config:
            raise ValueError(f"load format {LOAD_FORMAT!r} takes no --model-loader-extra-config: "
                             f"the model folder names its GGUF in {GGUF_POINTER}")

    def download_model(self, model_config) -> None:
        read_pointer(model_config.model)  # nothing to fetch: the GGUF is a local file; check it is there

    def load_weights(self, model, model_config) -> None:
        start = time.perf_counter()
        path = read_pointer(model_config.model)
        weights = GGUFWeights(path, model_config.hf_config)
        dtype = getattr(model_config.hf_config, "dtype", None)
        if isinstance(dtype, torch.dtype):
            weights = ((name, tensor.to(dtype)) for name, tensor in weights)
        loaded = model.load_weights(weights)
        logger.info("Loading weights took %.2f seconds", time.perf_counter() - start)
        # As vLLM's own loader does: an unquantized model must have every parameter from the file.
        if loaded is not None and model_config.quantization is None:
            missing = {name for name, _ in model.named_parameters()} - loaded
            if missing:
                raise ValueError(f"{path.name} holds no weights for {sorted(missing)[:5]}")


def register() -> None:
    register_model_loader(LOAD_FORMAT)(GGUFModelLoader)
