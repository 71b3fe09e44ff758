"""A small Python client for ``braid serve`` (httpx).

>>> with BraidClient("http://127.0.0.1:8080") as client:
...     client.search("microglia in the brain", k=5)[0]["id"]

Errors come back as :class:`ServiceError` carrying the HTTP status, the server's ``code`` and
message (the problem-details body of :mod:`braid.retrieval.serve.errors`; ``status == 503`` means
overloaded: retry after ``retry_after`` seconds). ``token``: the bearer token of a server started
with ``--token``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from braid.data.errors import BraidError


class ServiceError(BraidError):
    """A non-2xx answer from the server: ``status``, ``code`` (e.g. ``invalid_request``; None when
    the body was not a problem-details object), ``message``, ``retry_after`` (seconds or None)."""

    def __init__(self, status: int, message: str, retry_after: float | None = None, code: str | None = None):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.retry_after = retry_after
        self.code = code


class BraidClient:
    """Talks to one ``braid serve`` server at ``base_url`` (keeps a connection pool; close it or use ``with``)."""

    def __init__(self, base_url: str = "http://127.0.0.1:8080", timeout: float = 30.0, token: str | None = None, **httpx_kwargs):
        try:
            import httpx
        except ImportError:  # pragma: no cover - depends on the environment
            raise BraidError("BraidClient needs httpx: pip install 'braid[serve]'") from None
        headers = dict(httpx_kwargs.pop("headers", None) or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, headers=headers, **httpx_kwargs)

    # ------------------------------------------------------------ plumbing
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "BraidClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check(self, response) -> Any:
        if response.is_success:
            return response.json()
        code = None
        try:
            body = response.json()
        except ValueError:
            message = response.text
        else:
            if isinstance(body, dict):
                message, code = body.get("detail", body), body.get("code")
            else:
                message = body
        retry = response.headers.get("retry-after")
        raise ServiceError(response.status_code, str(message), float(retry) if retry and retry.replace(".", "", 1).isdigit() else None, code)

    @staticmethod
    def _options(k: int, retriever, pipeline, fields: bool, knobs: Mapping[str, Any]) -> dict:
        body: dict[str, Any] = {"k": k, "fields": fields}
        if retriever is not None:
            body["retriever"] = retriever
        if pipeline is not None:
            body["pipeline"] = pipeline
        body.update({key: v for key, v in knobs.items() if v is not None})
        return body

    # ------------------------------------------------------------ API
    def search(self, query: str, k: int = 10, retriever: str | None = None, pipeline: str | None = None, fields: bool = False, **knobs) -> list[dict]:
        """Hits of one query: ``[{"rank", "id", "score"(, "title", "text")}]``, best first.

        ``knobs``: ``query_cut``, ``heap_factor`` (sparse), ``nprobe``, ``ef_search`` (dense).
        """
        body = {"query": query, **self._options(k, retriever, pipeline, fields, knobs)}
        return self._check(self._http.post("/search", json=body))["hits"]

    def batch_search(
        self,
        queries: Sequence[str] | Mapping[str, str],
        k: int = 10,
        retriever: str | None = None,
        pipeline: str | None = None,
        fields: bool = False,
        **knobs,
    ) -> dict[str, list[dict]]:
        """Hits of many queries in one request: ``{query_id: hits}`` (ids are positions for a list)."""
        if isinstance(queries, Mapping):
            items: list = [{"id": str(qid), "query": text} for qid, text in queries.items()]
        else:
            items = list(queries)
        body = {"queries": items, **self._options(k, retriever, pipeline, fields, knobs)}
        answer = self._check(self._http.post("/batch_search", json=body))
        return {r["id"]: r["hits"] for r in answer["results"]}

    def info(self) -> dict:
        """The index manifest, ``num_docs``, served ``retrievers`` and ``pipelines``, ``default``, ``limits``."""
        return self._check(self._http.get("/info"))

    def health(self) -> dict:
        """``{"status", "in_flight", "capacity", ...}``."""
        return self._check(self._http.get("/health"))
