"""A logits processor that fails on demand, loaded beside the plugin's own.

The test server runs it with `--logits-processors tests.support.fault_processor:FaultInjectingProcessor`;
vLLM then runs both it and the plugin's entry-point processor. A request whose `vllm_xargs` carry
`{"test_fault": 1}` makes this one raise inside its batched step, on either of vLLM's model
runners, so a test sees a fault inside the engine core contained by the guard it inherits
(`RetroLogitsProcessor.apply`). It does nothing else: no tables, no constraint, no bias, so the
requests the server answers are shaped by the real processor alone.
"""

from __future__ import annotations

from retro_vllm.compat.logits import MoveDirectionality
from retro_vllm.decoding.processor import RetroLogitsProcessor

FAULT_ARG = "test_fault"


class FaultInjectingProcessor(RetroLogitsProcessor):
    def __init__(self, vllm_config, *args) -> None:  # noqa: D107 - none of the real processor's state
        self._faults_logged = 0
        self._outputs = {}  # what the inherited guard clears after a fault in update_state
        self._faulty: set[int] = set()  # V1 batch rows / V2 request slots asking for a fault

    def _update_batch(self, batch_update) -> None:
        for row in batch_update.removed:
            self._faulty.discard(row)
        for row, params, _prompt, _output in batch_update.added:
            self._faulty.discard(row)
            if (params.extra_args or {}).get(FAULT_ARG):
                self._faulty.add(row)
        for a, b, direction in batch_update.moved:
            at_a, at_b = a in self._faulty, b in self._faulty
            self._faulty -= {a, b}
            if at_a:
                self._faulty.add(b)
            if at_b and direction == MoveDirectionality.SWAP:
                self._faulty.add(a)

    def add_request(self, req_idx: int, sampling_params) -> bool:
        self._faulty.discard(req_idx)
        if (sampling_params.extra_args or {}).get(FAULT_ARG):
            self._faulty.add(req_idx)
            return True
        return False

    def _apply(self, logits, ctx):
        rows = range(logits.shape[0]) if ctx is None else ctx.idx_mapping_np
        if any(int(row) in self._faulty for row in rows):
            raise RuntimeError("injected fault (tests.support.fault_processor)")
        return logits
