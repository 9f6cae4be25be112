"""`python -m retro_vllm.cli ...`: the same as the `retro-vllm` console script."""

from retro_vllm.cli import main

if __name__ == "__main__":
    main()
