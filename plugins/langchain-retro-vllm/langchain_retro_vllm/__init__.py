"""LangChain integration for retro-vllm: `ChatRetroVLLM` keeps the server's citations,
`RetroVLLMRetriever` searches the server's index."""

from langchain_retro_vllm.chat_models import ChatRetroVLLM
from langchain_retro_vllm.retrievers import RetroVLLMRetriever

__all__ = ["ChatRetroVLLM", "RetroVLLMRetriever"]
