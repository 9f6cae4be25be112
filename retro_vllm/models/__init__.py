"""Models shipped with retro-vllm: the packaged default generator."""
