"""Evaluations that print tables: citation behaviour against a running server, the router's
accuracy, retrieval quality on a real data set (`retro-vllm eval ...`).

May import any library room; nothing imports it back but the CLI and the benches (an evaluation
is never on the request path).
"""
