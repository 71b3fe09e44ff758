"""``braid mcp``: one index as a Model Context Protocol server for LLM agents (the ``mcp`` SDK).

Tools (input schemas from the typed signatures below; every size bounded by :class:`McpLimits`):

``search(query, k=10, retriever=None, max_chars=400)``
    The top ``k`` (1..``max_k``) of a served retriever or pipeline (the same catalogue as ``braid serve``:
    the index's retrievers, the built-in pipelines, ``INDEX_DIR/pipelines/*.toml``), each hit with its
    rank, id, score, title and the first ``max_chars`` characters of its text.
``get_document(id, max_chars=4000)``
    One stored document by id, its text cut at ``max_chars`` (at most ``max_document_chars``).
``describe_index()``
    What the index holds: documents, retrievers, pipelines, the default, the encoders (no server paths).

``search`` takes a metadata ``filter`` (string or JSON form, :mod:`braid.data.filters`), applied inside every
retriever before its top k; ``describe_index`` lists the fields it can name. Errors are tool errors (``isError`` results naming the argument), never a crashed server: a
library error keeps its message, anything else becomes "internal error: TYPE" and is logged.

Transports: stdio (the default; stdout carries only protocol messages) and streamable HTTP
(``/mcp``), which takes the same bearer-token option as ``braid serve``
(:class:`braid.retrieval.serve.auth.AuthConfig`: 401 without a token, 403 with a wrong one).

The ``mcp`` SDK (extra ``braid[mcp]``) is imported inside :func:`create_mcp_server`.
"""

# No `from __future__ import annotations`: the SDK reads the tools' annotations at run time.
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Optional

from braid.data.errors import BraidError, OptionError, check_positive_int

log = logging.getLogger("braid.mcp")


@dataclass(frozen=True)
class McpLimits:
    """Bounds on what one tool call returns: ``max_k`` hits, ``max_snippet_chars`` of text per hit,
    ``max_document_chars`` of one document, ``max_query_chars`` of query."""

    max_k: int = 100
    max_snippet_chars: int = 2000
    max_document_chars: int = 20000
    max_query_chars: int = 4096

    def __post_init__(self) -> None:
        for name in ("max_k", "max_snippet_chars", "max_document_chars", "max_query_chars"):
            check_positive_int(name, getattr(self, name))


def _cut(text: str, limit: int) -> tuple[str, bool]:
    return (text, False) if len(text) <= limit else (text[:limit].rstrip() + " …", True)


def create_mcp_server(
    index_dir: str | Path, *, limits: McpLimits | None = None, pipelines=(), default: Optional[str] = None, warm: bool = True, searcher=None, runtime: str = "auto"
):
    """An ``mcp.server.mcpserver.MCPServer`` with the tools ``search``, ``get_document`` and ``describe_index``
    over ``index_dir``. ``pipelines``/``default``/``warm``: as for ``braid serve``
    (:func:`braid.retrieval.serve.app.load_catalog`). ``searcher``: an open Searcher (tests).
    ``runtime``: the query encoders' runtime (``--runtime``)."""
    try:
        from mcp.server.mcpserver import MCPServer
        from mcp.server.mcpserver.exceptions import ToolError
        from mcp.types import ToolAnnotations
        from pydantic import BaseModel, Field
    except ImportError as exc:
        raise OptionError("braid mcp", str(exc), "needs the mcp extra: pip install 'braid[mcp]'") from None
    from braid import __version__
    from braid.retrieval.searcher import Searcher
    from braid.retrieval.serve.app import _public, load_catalog
    from braid.retrieval.serve.errors import scrub_paths

    limits = limits if limits is not None else McpLimits()
    if searcher is None:
        searcher = Searcher(index_dir, runtime=runtime)
    catalog = load_catalog(searcher, pipelines, default=default, warm=warm)
    from braid.data.lazy import load_all

    load_all()  # numba's kernels at start, as braid serve does
    lock = threading.Lock()  # the searcher's lazy loads and the learned encoders are not thread-safe
    name = Path(searcher.index_dir).name
    served = tuple(catalog.names)

    server = MCPServer(
        name="braid",
        title=f"Braid: {name}",
        version=__version__,
        instructions=(
            f"Search the collection '{name}' ({searcher.num_docs} documents) with Braid's hybrid retrieval. "
            f"Call search for ranked documents (retriever: one of {', '.join(served)}; default {catalog.default}), "
            "get_document for a document's full text, describe_index for what the index holds."
        ),
    )
    read_only = ToolAnnotations(readOnlyHint=True, idempotentHint=True, openWorldHint=False)

    def guarded(fn):
        """Run a tool body: library errors become tool errors with their message, anything else a logged
        internal error (the server keeps serving)."""
        try:
            with lock:
                return fn()
        except ToolError:
            raise
        except BraidError as exc:
            raise ToolError(scrub_paths(str(exc))) from None
        except Exception as exc:  # noqa: BLE001 - never crash the server on one call
            log.exception("tool call failed")
            raise ToolError(f"internal error: {type(exc).__name__}") from None

    Query = Annotated[str, Field(min_length=1, max_length=limits.max_query_chars, description="the search query (natural language or keywords)")]
    K = Annotated[int, Field(ge=1, le=limits.max_k, description=f"number of hits, 1..{limits.max_k}")]
    Engine = Optional[Literal[served]]  # type: ignore[valid-type]
    Snippet = Annotated[int, Field(ge=0, le=limits.max_snippet_chars, description=f"characters of each hit's text to include, 0..{limits.max_snippet_chars}")]
    DocChars = Annotated[int, Field(ge=1, le=limits.max_document_chars, description=f"characters of the text to return, 1..{limits.max_document_chars}")]

    class Hit(BaseModel):
        rank: int
        id: str
        score: float
        title: str
        text: str = Field(description="the start of the document's text (max_chars)")
        text_truncated: bool

    class SearchResult(BaseModel):
        query: str
        retriever: str
        hits: list[Hit]

    class Document(BaseModel):
        id: str
        title: str
        text: str
        text_truncated: bool
        chars: int = Field(description="length of the whole stored text")

    class IndexDescription(BaseModel):
        index: str
        num_docs: int
        retrievers: list[str]
        pipelines: dict
        default: str
        unavailable: dict
        encoders: dict
        limits: dict
        filters: Optional[dict] = Field(None, description="the documents' metadata fields and their kinds, which search's filter can name (null: the index has no metadata)")
        version: str

    @server.tool(name="search", title="Search the collection", annotations=read_only)
    def search(
        query: Query,
        k: K = 10,
        retriever: Annotated[Engine, Field(description=f"retriever or pipeline: {', '.join(served)} (default {catalog.default})")] = None,
        max_chars: Snippet = 400,
        filter: Annotated[
            Optional[str],
            Field(max_length=2048, description='metadata filter, applied before the top k: "year >= 2000 and lang = en", "lang in (en, fr)", "not draft = true", or its JSON form; fields: describe_index'),
        ] = None,
    ) -> SearchResult:
        """Ranked documents for a query: rank, id, score, title and the start of the text of each hit."""

        def run() -> dict:
            chosen = retriever or catalog.default
            hits = searcher.search(query, k=k, retriever=catalog.engine(chosen), fields=True, filter=filter or None)
            out = []
            for hit in hits:
                text, cut = _cut(hit.get("text") or "", max_chars)
                out.append({"rank": hit["rank"], "id": hit["id"], "score": hit["score"], "title": hit.get("title") or "", "text": text, "text_truncated": cut})
            return SearchResult(query=query, retriever=chosen, hits=out)

        return guarded(run)

    @server.tool(name="get_document", title="Get one document", annotations=read_only)
    def get_document(
        id: Annotated[str, Field(min_length=1, max_length=512, description="a document id, as search returns it")],
        max_chars: DocChars = 4000,
    ) -> Document:
        """A stored document by id: its title and text (cut at max_chars; text_truncated says so)."""

        def run() -> dict:
            docno = searcher.docno(id)
            if docno < 0:
                raise ToolError(f"id={id!r}: no such document in {name}")
            (stored,) = searcher.documents([docno])
            text, cut = _cut(stored.get("text") or "", max_chars)
            return Document(id=id, title=stored.get("title") or "", text=text, text_truncated=cut, chars=len(stored.get("text") or ""))

        return guarded(run)

    @server.tool(name="describe_index", title="Describe the index", annotations=read_only)
    def describe_index() -> IndexDescription:
        """What this server searches: the collection's size, the retrievers and pipelines it serves, the default, the encoders."""

        def run() -> dict:
            manifest = searcher.manifest
            fields = searcher.context.metadata.kinds()
            encoders = {c: cfg.get("encoder") or cfg.get("model") for c, cfg in (manifest.get("components") or {}).items() if isinstance(cfg, dict) and (cfg.get("encoder") or cfg.get("model"))}
            return IndexDescription(**_public({
                "index": name,
                "num_docs": searcher.num_docs,
                "retrievers": catalog.retrievers,
                "pipelines": {p: spec.to_dict() for p, spec in catalog.pipelines.items()},
                "default": catalog.default,
                "unavailable": catalog.unavailable,
                "encoders": encoders,
                "limits": {"max_k": limits.max_k, "max_snippet_chars": limits.max_snippet_chars, "max_document_chars": limits.max_document_chars},
                "filters": {"fields": fields} if fields else None,
                "version": __version__,
            }))

        return guarded(run)

    server.braid_catalog = catalog  # type: ignore[attr-defined]
    return server


class BearerGate:
    """ASGI wrapper that admits only requests with ``auth``'s bearer token (when one is configured)."""

    def __init__(self, app, auth):
        self.app = app
        self.auth = auth

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.auth.enabled:
            headers = dict(scope.get("headers", ()))
            refused = self.auth.check("read", headers.get(b"authorization"))
            if refused is not None:
                from braid.retrieval.serve.errors import PROBLEM_MEDIA_TYPE, problem_body

                status, code, detail = refused
                body = problem_body(status, code, detail)
                challenge = b'Bearer realm="braid"' if status == 401 else b'Bearer realm="braid", error="invalid_token"'
                await send({"type": "http.response.start", "status": status, "headers": [
                    (b"content-type", PROBLEM_MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode()), (b"www-authenticate", challenge)]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def streamable_http_app(server, auth, host: str = "127.0.0.1"):
    """The server's streamable-HTTP ASGI app at ``/mcp``, behind :class:`BearerGate`."""
    return BearerGate(server.streamable_http_app(host=host), auth)
