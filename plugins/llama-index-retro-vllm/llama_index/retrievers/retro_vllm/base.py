"""`RetroVLLMRetriever`: the server's own index (`POST /v1/retro/search`) as a LlamaIndex retriever."""

from __future__ import annotations

from typing import Any

import httpx
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode


class RetroVLLMRetriever(BaseRetriever):
    """`NodeWithScore`s whose node id is the passage id, with `url`, `title`, `domain`, `score`
    and `rank` in metadata. `base_url` is the server's root or its `/v1` URL."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, domain: str | None = None,
                 top_k: int | None = None, filters: dict[str, Any] | None = None, api_key: str | None = None,
                 timeout: float = 60.0, **kwargs: Any) -> None:
        self._url = f"{base_url.rstrip('/').removesuffix('/v1')}/v1/retro/search"
        self._controls = {k: v for k, v in (("domain", domain), ("top_k", top_k), ("filters", filters)) if v is not None}
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = timeout
        super().__init__(**kwargs)

    def _nodes(self, response: httpx.Response) -> list[NodeWithScore]:
        response.raise_for_status()
        return [
            NodeWithScore(node=TextNode(id_=p["id"], text=p["text"], metadata={
                "id": p["id"], "url": p.get("url"), "title": p.get("title"), "domain": p.get("domain"),
                "score": p.get("score"), "rank": p.get("rank")}), score=p.get("score"))
            for p in response.json()["passages"]
        ]

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        with httpx.Client(timeout=self._timeout) as client:
            return self._nodes(client.post(self._url, json={"query": query_bundle.query_str, **self._controls},
                                           headers=self._headers))

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            return self._nodes(await client.post(self._url, json={"query": query_bundle.query_str, **self._controls},
                                                 headers=self._headers))
