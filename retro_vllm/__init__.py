"""retro-vllm: retrieval-augmented, multi-domain serving inside vLLM.

Importing this package is cheap on purpose: vLLM loads our general plugin in every
process, so nothing here may import torch, vLLM or a model.
"""

__version__ = "0.1.0"
