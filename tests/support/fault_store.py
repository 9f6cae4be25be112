"""A vector store that fails on demand: FAISS, except that a search whose filters carry
`test_fault` fails as asked ("store_error" raises at once, "store_sleep" hangs past the test
server's `retrieval.timeout_s`, then raises, so nothing is cached for it).

The test server names it as its store (`retrieval.backend:
tests.support.fault_store:FaultInjectingFaissStore`, the way a user plugs in a store of their
own), so a client's `retro.filters` reach it through the real request path. It imports FAISS's
store only: the processes that open the index stay free of torch and vLLM.
"""

from __future__ import annotations

import time

from retro_vllm.retrieval.stores.faiss import FaissStore

FAULT_ARG = "test_fault"
# Longer than the test server's retrieval.timeout_s (tests/conftest.py: 2 s).
HANG_S = 3.0


class FaultInjectingFaissStore(FaissStore):
    def search(self, vector, *, top_k, filters=None):
        fault = (filters or {}).get(FAULT_ARG)
        if fault == "store_sleep":
            time.sleep(HANG_S)
        if fault in ("store_error", "store_sleep"):
            raise RuntimeError(f"injected store fault {fault} (tests.support.fault_store)")
        return super().search(vector, top_k=top_k, filters=filters)
