from llama_index.llms.retro_vllm.base import RetroVLLM

__all__ = ["RetroVLLM"]
