"""`RetroVLLMRetriever`: the server's own index (`POST /v1/retro/search`) as a LangChain retriever."""

from __future__ import annotations

from typing import Any

import httpx
from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever


class RetroVLLMRetriever(BaseRetriever):
    """Documents with the passage `id`, `url`, `title`, `domain`, `score` and `rank` in metadata.

    `base_url` is the server's root or its `/v1` URL (as given to OpenAI clients).
    """

    base_url: str = "http://127.0.0.1:8000"
    domain: str | None = None
    top_k: int | None = None
    filters: dict[str, Any] | None = None
    api_key: str | None = None
    timeout: float = 60.0

    def _url(self) -> str:
        root = self.base_url.rstrip("/")
        return f"{root.removesuffix('/v1')}/v1/retro/search"

    def _body(self, query: str, overrides: dict[str, Any]) -> dict[str, Any]:
        """Per-call `domain`, `top_k`, `filters` (e.g. `retriever.invoke(q, top_k=2)`) win."""
        body: dict[str, Any] = {"query": query}
        for key in ("domain", "top_k", "filters"):
            value = overrides.get(key, getattr(self, key))
            if value is not None:
                body[key] = value
        return body

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    @staticmethod
    def _documents(response: httpx.Response) -> list[Document]:
        response.raise_for_status()
        return [
            Document(page_content=p["text"], id=p["id"], metadata={
                "id": p["id"], "url": p.get("url"), "title": p.get("title"), "domain": p.get("domain"),
                "score": p.get("score"), "rank": p.get("rank"),
            })
            for p in response.json()["passages"]
        ]

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                **kwargs: Any) -> list[Document]:
        with httpx.Client(timeout=self.timeout) as client:
            return self._documents(client.post(self._url(), json=self._body(query, kwargs), headers=self._headers()))

    async def _aget_relevant_documents(self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun,
                                       **kwargs: Any) -> list[Document]:
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            return self._documents(await client.post(self._url(), json=self._body(query, kwargs),
                                                     headers=self._headers()))
