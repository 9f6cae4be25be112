from llama_index.retrievers.retro_vllm.base import RetroVLLMRetriever

__all__ = ["RetroVLLMRetriever"]
