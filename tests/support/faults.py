"""Faults on demand, from outside the live request path.

`FaultInjectingFaissStore` is FAISS with one difference: a search whose filters carry
`test_fault` fails as asked ("store_error" raises, "store_sleep" hangs past the test server's
`retrieval.timeout_s`). The test server names it as its store (`retrieval.backend:
tests.support.faults:FaultInjectingFaissStore`, the way a user plugs in a store of their own),
so a client's `retro.filters` reach it through the real request path.

`FaultInjectingProcessor` is the plugin's logits processor with one difference: a request whose
`vllm_xargs` carry `{"test_fault": 1}` makes its batched step raise. The test server loads it
beside the real one with `--logits-processors tests.support.faults:FaultInjectingProcessor`, so
a test sees a fault raised inside the engine core contained by the processor's own guard.
"""

from __future__ import annotations

import time

from retro_vllm.decoding.processor import RetroLogitsProcessor
from retro_vllm.retrieval.stores.faiss import FaissStore

FAULT_ARG = "test_fault"
# Longer than the test server's retrieval.timeout_s (tests/conftest.py: 2 s).
HANG_S = 3.0


class FaultInjectingFaissStore(FaissStore):
    def search(self, vector, *, top_k, filters=None):
        fault = (filters or {}).get(FAULT_ARG)
        if fault == "store_error":
            raise RuntimeError("injected store fault (tests.support.faults)")
        if fault == "store_sleep":
            time.sleep(HANG_S)
        return super().search(vector, top_k=top_k, filters=filters)


class FaultInjectingProcessor(RetroLogitsProcessor):
    def __init__(self, vllm_config, *args) -> None:
        super().__init__(vllm_config, *args)
        self._faulty_rows: set[int] = set()

    def _update_batch(self, batch_update) -> None:
        from retro_vllm.compat.logits import MoveDirectionality

        for row in batch_update.removed:
            self._faulty_rows.discard(row)
        for row, params, _prompt, _output in batch_update.added:
            self._faulty_rows.discard(row)
            if (params.extra_args or {}).get(FAULT_ARG):
                self._faulty_rows.add(row)
        for a, b, direction in batch_update.moved:
            at_a, at_b = a in self._faulty_rows, b in self._faulty_rows
            self._faulty_rows -= {a, b}
            if at_a:
                self._faulty_rows.add(b)
            if at_b and direction == MoveDirectionality.SWAP:
                self._faulty_rows.add(a)
        super()._update_batch(batch_update)

    def _apply(self, logits, ctx):
        if ctx is None and any(row < logits.shape[0] for row in self._faulty_rows):
            raise RuntimeError("injected fault (tests.support.faults)")
        return super()._apply(logits, ctx)
