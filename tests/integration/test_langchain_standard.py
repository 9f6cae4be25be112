"""LangChain's own standard suites (langchain-tests) for ChatRetroVLLM and RetroVLLMRetriever,
against the real server. Capability flags say what the server really supports; every flag set
to False is explained in plugins/langchain-retro-vllm/README.md."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.engine
pytest.importorskip("langchain_tests")
from langchain_tests.integration_tests import ChatModelIntegrationTests, RetrieversIntegrationTests  # noqa: E402
from langchain_tests.unit_tests import ChatModelUnitTests  # noqa: E402

from langchain_retro_vllm import ChatRetroVLLM, RetroVLLMRetriever  # noqa: E402

SERVER = {"url": "http://127.0.0.1:9/v1"}  # set to the session server's URL before each test
BASE_MODEL = "SmolLM2-135M-Instruct"


@pytest.fixture(autouse=True)
def _server_url(retro_server):
    SERVER["url"] = f"{retro_server.base_url}/v1"


class _Flags:
    @property
    def chat_model_class(self):
        return ChatRetroVLLM

    @property
    def chat_model_params(self) -> dict:
        # The base model answers (fast on CPU); retrieval and citations still run server-side.
        return {"model": BASE_MODEL, "base_url": SERVER["url"]}

    @property
    def has_tool_calling(self) -> bool:
        return False  # the demo server runs without --enable-auto-tool-choice (the 135M model has no tool parser)

    @property
    def has_structured_output(self) -> bool:
        return True  # response_format json_schema: vLLM's structured outputs

    @property
    def structured_output_kwargs(self) -> dict:
        return {"method": "json_schema"}

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supports_image_inputs(self) -> bool:
        return False  # a text-only model


class TestChatRetroVLLMUnit(_Flags, ChatModelUnitTests):
    pass


class TestChatRetroVLLMIntegration(_Flags, ChatModelIntegrationTests):
    @property
    def chat_model_params(self) -> dict:
        # The 135M demo model can ramble inside a JSON string; give structured answers room to close.
        return {**super().chat_model_params, "max_tokens": 256, "frequency_penalty": 0.5}


class TestRetroVLLMRetriever(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self):
        return RetroVLLMRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"base_url": SERVER["url"]}

    @property
    def retriever_query_example(self) -> str:
        return "What does DNS do?"

    @property
    def num_results_arg_name(self) -> str:
        return "top_k"
