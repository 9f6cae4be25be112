# `make bench`: set up with the benchmark tools, then run every bench (about 20 minutes on 2 cores).
.PHONY: bench test

bench:
	bash scripts/setup.sh --bench
	.venv/bin/python -m bench

test:
	bash scripts/setup.sh --dev
	.venv/bin/python -m pytest
