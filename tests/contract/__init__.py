"""Contract suites: one behaviour suite per seam, parametrized over every implementation of it
(the vector stores: test_store_contract.py). No engine; a backend that needs a server runs when
its URL is set and is skipped with that reason otherwise."""
