"""What every bench shares, one concern a module; the benches themselves (`bench/<name>.py`) hold
only their workload and their table.

- `driver`: the bench contract (`options`, `run`, `table`, optional `plot`) and the one main
  that parses, runs, prints, writes and plots for every bench.
- `servers`: process control: retro-vllm and stock vLLM servers on loopback (stock from its own
  environment), started together and stopped on exit.
- `memory`: peak RSS sampling, page-cache eviction, and work run in a fresh interpreter so the
  bench process never maps what the servers it measures map.
- `stats`: percentiles and the bootstrap standard error of a median.
- `client`: timed streamed requests through the OpenAI SDK, load at a concurrency, and the
  engine's own queue + prefill time from a server's metrics.
- `workload`: synthetic clustered vectors and the final prompt stock vLLM is given.
- `config`: the demo config on a fresh home, with its index and embedder export prepared once.
- `results`: where results go (`bench/results/`), the machine line, writing `.md`/`.json`, pyplot.

Nothing here imports torch, vLLM or faiss at module level: the overhead bench's process must not
map the libraries of the servers it measures (see `memory`). A bench that needs them imports them
in the function that uses them (multi_lora's adapters), or, where it measures memory, runs that
work in `memory.isolated` (overhead's index).
"""
