"""vLLM's two logits-processor interfaces (engine side): the V1 model runner's (CPU) and the V2
model runner's (the CUDA default in 0.32), which refuses a class that is not its subclass."""

from __future__ import annotations

from vllm.v1.sample.logits_processor.interface import BatchUpdate, MoveDirectionality  # noqa: F401
from vllm.v1.sample.logits_processor.interface import (
    LogitsProcessor as V1LogitsProcessor,  # noqa: F401
)
from vllm.v1.worker.gpu.sample.logits_processor.interface import (
    LogitsProcessor as V2LogitsProcessor,  # noqa: F401
)
