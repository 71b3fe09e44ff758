"""The HTTP search service: one index directory behind a JSON API (``braid serve``).

The service owns request validation, admission control and the mapping of library errors to HTTP
statuses; searching is the :class:`~braid.retrieval.searcher.Searcher`'s job. Endpoints::

    POST /search        {"query": str, "k": int, "retriever"|"pipeline": str, "fields": bool, knobs}
                        -> {"hits": [{"rank", "id", "score"(, "title", "text")}], "retriever", "took_ms"}
    POST /batch_search  {"queries": [str | {"id", "query"}], "k", ...} -> {"results": [{"id", "hits"}], ...}
    GET  /health        liveness and load: {"status", "in_flight", "capacity", ...}
    GET  /info          manifest, num_docs, retrievers and pipelines served, limits
    GET  /openapi.json, /docs, /redoc

Concurrency. The event loop only parses, admits and writes; every search (and the JSON encoding of
its answer) runs in a thread pool of ``max_concurrency`` threads, so tantivy, Numba and FAISS work
never blocks the loop. At most ``max_concurrency + queue_size`` searches are admitted at once: a
request beyond that gets 503 at once with ``Retry-After`` (shedding load instead of queueing
without bound), and one that is not answered within ``timeout_s`` of its admission gets 504 (a
search still queued then is dropped; one already running finishes in its thread and keeps its
slot until it does, so a stuck backend shows up as 503s, not as a growing pile of threads). A
queued search whose client disconnects is dropped too.
Retrievers that are not known to be thread-safe (the learned ones) are used by one thread at a
time per index component (``/info`` lists them under ``serialized``).

Files. The server reads only its index directory: pipelines are loaded once at start (the
built-in ones, ``INDEX_DIR/pipelines/*.toml`` and files given to ``create_app``), and a request
can only name one of those, never a path.

FastAPI and pydantic are imported inside :func:`create_app`, so ``import braid`` (and this module)
works without the ``serve`` extra.
"""

# No `from __future__ import annotations`: FastAPI and pydantic read the annotations of the
# request models defined inside create_app at run time.
import json
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence

from braid.data.errors import BraidError, OptionError, check_finite, check_nonneg_int, check_positive_int
from braid.retrieval import retrievers as registry

log = logging.getLogger("braid.serve")

PIPELINE_DIR = "pipelines"
WARM_QUERY = "warm up"


# ---------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class ServiceConfig:
    """Limits of one service. All are validated here, at the boundary.

    ``max_concurrency``: searches running at once (threads). ``queue_size``: admitted searches
    waiting for a thread; beyond ``max_concurrency + queue_size`` requests get 503.
    ``timeout_s``: seconds from admission to answer before a 504. ``max_k``: largest ``k``.
    ``max_body_bytes``: largest request body (413 beyond). ``max_batch``: most queries in one
    ``/batch_search``. ``max_query_chars``: longest query string.
    """

    max_concurrency: int = 2
    queue_size: int = 32
    timeout_s: float = 10.0
    max_k: int = 1000
    max_body_bytes: int = 1 << 20
    max_batch: int = 256
    max_query_chars: int = 4096
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        for name in ("max_concurrency", "max_k", "max_body_bytes", "max_batch", "max_query_chars", "retry_after_s"):
            check_positive_int(name, getattr(self, name))
        check_nonneg_int("queue_size", self.queue_size)
        check_finite("timeout_s", self.timeout_s, low=0, low_open=True, hint="seconds")

    @property
    def capacity(self) -> int:
        """Searches admitted at once (running + queued)."""
        return self.max_concurrency + self.queue_size

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ServiceConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise OptionError("service config", ", ".join(sorted(unknown)), "unknown key; allowed: " + ", ".join(cls.__dataclass_fields__))
        return cls(**d)


# ---------------------------------------------------------------------- what is served
@dataclass
class Catalog:
    """Retrievers and pipelines a service answers for, checked (and warmed) at start.

    ``pipelines`` maps a request name to a parsed :class:`~braid.retrieval.pipeline.spec.Pipeline`;
    ``sources`` says where each came from; ``unavailable`` maps a name the index lists but that
    failed to load to the reason.
    """

    retrievers: list[str]
    pipelines: dict[str, Any]
    sources: dict[str, str]
    default: str
    unavailable: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.retrievers) + list(self.pipelines)

    def engine(self, name: str):
        """What ``Searcher.batch_search(retriever=...)`` takes for ``name``: a retriever name or a Pipeline."""
        name = self.aliases.get(name, name)
        if name in self.retrievers:
            return name
        return self.pipelines[name]


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def load_catalog(searcher, pipeline_files: Sequence[str | Path] = (), default: str | None = None, warm: bool = True) -> Catalog:
    """Decide what ``searcher`` serves: its retrievers, the built-in pipelines, the pipelines in
    ``INDEX_DIR/pipelines/`` and ``pipeline_files`` (which override same-named ones).

    With ``warm`` each retriever and pipeline answers one query now, so that lazy loading (models,
    FAISS files) happens once, before requests run concurrently; one that fails is left out and
    listed in ``unavailable``. A bad file in ``pipeline_files`` or a bad ``default`` raises
    OptionError; a bad file in the index's ``pipelines/`` folder is only reported.
    """
    from braid.retrieval.pipeline import spec as pl
    from braid.retrieval.pipeline.runner import load_pipeline

    unavailable: dict[str, str] = {}
    retrievers: list[str] = []
    for name in searcher.available_retrievers():
        try:
            if warm:
                searcher.batch_search([WARM_QUERY], k=1, retriever=name)
            else:
                searcher.retriever(name)
        except Exception as exc:  # noqa: BLE001 - a broken component must not stop the others from serving
            log.warning("retriever %s is not served: %s", name, exc)
            unavailable[name] = f"{type(exc).__name__}: {exc}"
            continue
        retrievers.append(name)

    candidates: dict[str, tuple[Any, str]] = {}
    usable = [r for r in retrievers]
    for name in pl.BUILTIN:
        try:
            candidates[name] = (pl.builtin_pipeline(name, usable), "built-in")
        except BraidError as exc:
            unavailable[name] = str(exc)
    folder = Path(searcher.index_dir) / PIPELINE_DIR
    if folder.is_dir():
        for path in sorted(folder.glob("*.toml")):
            if not _inside(path, searcher.index_dir):
                unavailable[path.stem] = f"{path} points outside the index directory"
                continue
            try:
                candidates[path.stem] = (pl.read_pipeline(path), f"{PIPELINE_DIR}/{path.name}")
            except BraidError as exc:
                log.warning("pipeline %s is not served: %s", path, exc)
                unavailable[path.stem] = str(exc)
    explicit = set()
    for path in pipeline_files:
        path = Path(path)
        candidates[path.stem] = (pl.read_pipeline(path), str(path))  # raises OptionError on a bad file
        explicit.add(path.stem)
    for name in list(candidates):
        if name in pl.BUILTIN or name in explicit:
            continue
        if name in registry.RETRIEVERS:
            del candidates[name]
            unavailable[name] = f"a pipeline file may not take a retriever's name ({name})"

    pipelines: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, (pipeline, source) in candidates.items():
        try:
            missing = [s.name for s in pipeline.retrievers if s.name not in retrievers]
            if missing:
                raise OptionError("pipeline " + name, ", ".join(missing), "retrievers this server does not serve: " + (", ".join(retrievers) or "none"))
            if warm:
                searcher.batch_search([WARM_QUERY], k=1, retriever=pipeline)
            else:
                load_pipeline(pipeline, searcher)
        except Exception as exc:  # noqa: BLE001
            if name in explicit:
                if isinstance(exc, BraidError):
                    raise
                raise OptionError("--pipeline", source, f"fails on this index: {type(exc).__name__}: {exc}") from exc
            log.warning("pipeline %s is not served: %s", name, exc)
            unavailable[name] = f"{type(exc).__name__}: {exc}" if not isinstance(exc, BraidError) else str(exc)
            continue
        pipelines[name] = pipeline
        sources[name] = source
    if not retrievers:
        raise OptionError("index", str(searcher.index_dir), "no retriever of this index could be loaded: " + "; ".join(f"{k}: {v}" for k, v in unavailable.items()))

    aliases = {f"{name}.toml": name for name, src in sources.items() if src != "built-in"}
    served = retrievers + list(pipelines)
    if default is None:
        real = [r for r in retrievers if registry.get(r).hybrid]
        default = "hybrid" if len(real) > 1 and "hybrid" in pipelines else retrievers[0]
    default = aliases.get(default, default)
    if default not in served:
        raise OptionError("--default", default, "one of the served retrievers and pipelines: " + ", ".join(served))
    return Catalog(retrievers=retrievers, pipelines=pipelines, sources=sources, default=default, unavailable=unavailable, aliases=aliases)


# ---------------------------------------------------------------------- thread safety of retrievers
# Retrievers whose spec is not ``thread_safe`` (the learned ones: an encoder may patch its model during
# a forward pass) have each of their components used by one thread at a time; different components
# still overlap. tantivy's and Lucene's searchers are made for concurrent use.


class _Serialized:
    """Proxy to a retriever whose method calls hold ``lock`` (attributes pass through)."""

    def __init__(self, inner, lock: threading.RLock):
        self._inner = inner
        self._lock = lock

    def __getattr__(self, name):
        attr = getattr(self._inner, name)
        if not callable(attr) or name.startswith("__"):
            return attr

        def locked(*args, **kwargs):
            with self._lock:
                return attr(*args, **kwargs)

        return locked


def serialize_unsafe_retrievers(searcher, names: Sequence[str]) -> dict[str, str]:
    """Wrap ``searcher``'s loaded retrievers whose spec is not thread-safe so that calls into one
    index component never overlap; returns ``{retriever: component lock}``."""
    locks: dict[str, threading.RLock] = {}
    out = {}
    for name in names:
        spec = registry.get(name)
        if spec.thread_safe or name not in searcher._retrievers:
            continue
        component = spec.component
        lock = locks.setdefault(component, threading.RLock())
        inner = searcher._retrievers[name]
        if not isinstance(inner, _Serialized):
            searcher._retrievers[name] = _Serialized(inner, lock)
        out[name] = component
    return out


def _knob_type(knob):
    """The pydantic type of a retriever knob: strict, with the spec's bounds (and 1e6 above integers)."""
    from typing import Annotated

    from pydantic import Field

    if knob.kind is bool:
        return Annotated[bool, Field(strict=True)]
    bounds = {}
    if knob.low is not None:
        bounds["gt" if knob.low_open else "ge"] = knob.low
    if knob.kind is int:
        bounds["le"] = int(knob.high) if knob.high is not None else 1_000_000
        return Annotated[int, Field(strict=True, **bounds)]
    if knob.high is not None:
        bounds["le"] = knob.high
    return Annotated[float, Field(strict=True, allow_inf_nan=False, **bounds)]


# ---------------------------------------------------------------------- admission control
class Overloaded(Exception):
    """More searches than ``capacity`` are admitted."""


class SearchTimeout(Exception):
    """A search was not answered within ``timeout_s``."""


class ClientGone(Exception):
    """The client disconnected before its search was answered."""


class Admission:
    """Runs blocking search work in a bounded pool; sheds load beyond ``capacity``.

    ``in_flight`` counts admitted searches until their work has really finished (or was dropped
    before starting), so a slot is only freed when its thread is.
    """

    def __init__(self, config: ServiceConfig):
        self.config = config
        self._lock = threading.Lock()
        self._in_flight = 0
        self.served = 0
        self.rejected = 0
        self.timed_out = 0
        self.abandoned = 0
        self._executor: ThreadPoolExecutor | None = None

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def full(self) -> bool:
        return self._in_flight >= self.config.capacity

    def overloaded_message(self) -> str:
        return f"overloaded: {self.config.capacity} searches are already running or queued; retry later"

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self.config.max_concurrency, thread_name_prefix="braid-search")
        return self._executor

    def _release(self, _fut: Future) -> None:
        with self._lock:
            self._in_flight -= 1

    async def run(self, fn: Callable[[], Any], gone: Callable[[], Awaitable[None]] | None = None) -> Any:
        """``fn()`` in a worker thread; Overloaded when full, SearchTimeout after ``timeout_s``.

        ``gone``: an awaitable factory that returns when the client has disconnected; the search is
        then dropped if it has not started (ClientGone), so abandoned requests do not hold the queue.
        """
        import asyncio

        with self._lock:
            if self._in_flight >= self.config.capacity:
                self.rejected += 1
                raise Overloaded()
            self._in_flight += 1
        try:
            fut = self._pool().submit(fn)
        except BaseException:
            with self._lock:
                self._in_flight -= 1
            raise
        fut.add_done_callback(self._release)
        # Cancelling the wrapper cancels ``fut`` if it has not started yet; a running search
        # finishes in its thread (and keeps its slot until then).
        work = asyncio.wrap_future(fut)
        if gone is None:
            try:
                result = await asyncio.wait_for(work, self.config.timeout_s)
            except asyncio.TimeoutError:
                self.timed_out += 1
                raise SearchTimeout() from None
        else:
            watcher = asyncio.ensure_future(gone())
            try:
                done, _ = await asyncio.wait({work, watcher}, timeout=self.config.timeout_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                watcher.cancel()
            if work not in done:
                work.cancel()
                if watcher in done:
                    self.abandoned += 1
                    raise ClientGone()
                self.timed_out += 1
                raise SearchTimeout()
            result = work.result()
        self.served += 1
        return result

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


# ---------------------------------------------------------------------- body size limit
class BodyLimit:
    """ASGI middleware in front of the app: 413 for a request body over ``max_bytes`` (declared or
    streamed) and 400 for a malformed Content-Length, before the app parses anything; and, when
    ``admission`` is full, 503 for a search request before its body is even read (shedding load
    costs the event loop as little as possible)."""

    def __init__(self, app, max_bytes: int, admission: "Admission | None" = None, shed_paths: Sequence[str] = ("/search", "/batch_search")):
        self.app = app
        self.max_bytes = max_bytes
        self.admission = admission
        self.shed_paths = frozenset(shed_paths)

    async def _reply(self, send, status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = (), close: bool = True) -> None:
        body = json.dumps({"detail": message}).encode()
        head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
        if close:
            head.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        admission = self.admission
        if admission is not None and scope.get("path") in self.shed_paths and admission.full():
            admission.rejected += 1
            # The unread body is drained by the server before the connection is reused.
            return await self._reply(send, 503, admission.overloaded_message(), [(b"retry-after", str(admission.config.retry_after_s).encode())], close=False)
        declared = None
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                break
        if declared is not None and declared < 0:
            return await self._reply(send, 400, "malformed Content-Length header")
        if declared is not None and declared > self.max_bytes:
            return await self._reply(send, 413, f"request body of {declared} bytes is over the limit of {self.max_bytes} bytes")
        # Read the body here (bounded), then replay it: a chunked body over the limit is refused too.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._reply(send, 413, f"request body is over the limit of {self.max_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


# ---------------------------------------------------------------------- the app
def _valid_text(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (it holds a lone surrogate)") from None
    return value


def _error_message(errors: list[dict]) -> str:
    parts = []
    for e in errors[:5]:
        if e.get("type") == "json_invalid":
            parts.append("the request body is not valid JSON")
            continue
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def create_app(
    index_dir: str | Path,
    *,
    max_concurrency: int = 2,
    queue_size: int = 32,
    timeout_s: float = 10.0,
    max_k: int = 1000,
    max_body_bytes: int = 1 << 20,
    max_batch: int = 256,
    max_query_chars: int = 4096,
    pipelines: Sequence[str | Path] = (),
    default: str | None = None,
    warm: bool = True,
    searcher=None,
):
    """The FastAPI app serving ``index_dir``.

    The index is opened (and, with ``warm``, every retriever and pipeline loaded) now, so a bad
    index directory or pipeline file raises here (IndexFormatError / OptionError), not at the first
    request. ``pipelines``: extra TOML pipeline files, read once now. ``default``: the retriever or
    pipeline used when a request names none (default: ``hybrid`` when the index has several
    retrievers, else its only one). ``searcher``: an already open Searcher (tests).
    """
    try:
        from fastapi import FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import JSONResponse, Response
        from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, create_model
        from starlette.exceptions import HTTPException as StarletteHTTPException
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise OptionError("braid serve", str(exc), "needs the serve extra: pip install 'braid[serve]'") from None
    from contextlib import asynccontextmanager
    from typing import Annotated, Literal, Optional, Union

    from braid import __version__
    from braid.retrieval.searcher import Searcher

    config = ServiceConfig(
        max_concurrency=max_concurrency,
        queue_size=queue_size,
        timeout_s=timeout_s,
        max_k=max_k,
        max_body_bytes=max_body_bytes,
        max_batch=max_batch,
        max_query_chars=max_query_chars,
    )
    if searcher is None:
        searcher = Searcher(index_dir)
    catalog = load_catalog(searcher, pipelines, default=default, warm=warm)
    serialized = serialize_unsafe_retrievers(searcher, catalog.retrievers)
    admission = Admission(config)

    # ------------------------------------------------------------ request and response schemas
    QueryText = Annotated[str, Field(strict=True, min_length=1, max_length=config.max_query_chars), AfterValidator(_valid_text)]
    RetrieverName = Literal[tuple(catalog.names) + tuple(catalog.aliases)]  # type: ignore[valid-type]
    PipelineName = Literal[tuple(catalog.pipelines) + tuple(catalog.aliases)] if catalog.pipelines else Literal[None]  # type: ignore[valid-type]
    K = Annotated[int, Field(strict=True, ge=1, le=config.max_k, description=f"hits to return, 1..{config.max_k}")]

    class BaseOptions(BaseModel):
        model_config = ConfigDict(extra="forbid")
        k: K = 10
        retriever: Optional[RetrieverName] = Field(None, description="a retriever (or pipeline) name; see GET /info. Default: " + catalog.default)
        pipeline: Optional[PipelineName] = Field(None, description="a pipeline served by this server (built-in or INDEX_DIR/pipelines/NAME.toml); see GET /info")
        fields: StrictBool = Field(False, description="add each hit's stored title and text")

    # The retrievers' query knobs, typed and bounded as their specs say (braid.retrieval.retrievers).
    Options = create_model("Options", __base__=BaseOptions, **{name: (Optional[_knob_type(knob)], Field(None, description=knob.help)) for name, knob in registry.KNOBS.items()})

    class SearchRequest(Options):
        query: QueryText

    class QueryItem(BaseModel):
        model_config = ConfigDict(extra="forbid")
        id: Annotated[str, Field(strict=True, min_length=1, max_length=256), AfterValidator(_valid_text)]
        query: QueryText

    class BatchRequest(Options):
        queries: Annotated[
            list[Union[QueryText, QueryItem]],
            Field(min_length=1, max_length=config.max_batch, description=f"1..{config.max_batch} queries: strings (ids are their positions) or {{id, query}}"),
        ]

    class Hit(BaseModel):
        rank: int
        id: str
        score: float
        title: Optional[str] = None
        text: Optional[str] = None

    class SearchResponse(BaseModel):
        hits: list[Hit]
        retriever: str
        took_ms: float

    class QueryResult(BaseModel):
        id: str
        hits: list[Hit]

    class BatchResponse(BaseModel):
        results: list[QueryResult]
        retriever: str
        took_ms: float

    class Error(BaseModel):
        detail: Any

    errors = {
        400: {"model": Error, "description": "an option the chosen retriever cannot take"},
        413: {"model": Error, "description": "request body too large"},
        422: {"model": Error, "description": "invalid request (the message names the field)"},
        503: {"model": Error, "description": "overloaded: retry after Retry-After seconds"},
        504: {"model": Error, "description": "the search took longer than the server's timeout"},
    }

    # ------------------------------------------------------------ work done in the pool
    def pick(opts) -> tuple[str, Any]:
        if opts.retriever is not None and opts.pipeline is not None:
            raise _BadRequest(422, "give either retriever or pipeline, not both")
        name = opts.pipeline or opts.retriever or catalog.default
        name = catalog.aliases.get(name, name)
        return name, catalog.engine(name)

    def knobs_of(opts) -> dict:
        return {key: getattr(opts, key) for key in registry.KNOBS if getattr(opts, key) is not None}

    def hits_json(docnos, scores, fields: bool) -> list[dict]:
        out = [{"rank": r + 1, "id": searcher.doc_ids[d], "score": float(s)} for r, (d, s) in enumerate(zip(docnos.tolist(), scores.tolist()))]
        if fields and out:
            for hit, stored in zip(out, searcher.documents(docnos)):
                hit["title"] = stored["title"]
                hit["text"] = stored["text"]
        return out

    warmed = set(catalog.names) if warm else set()
    first_use = threading.Lock()
    serial = _serial_lock_if_needed(config.max_concurrency)

    def run(texts, k, name, engine, **kwargs):
        if serial is not None:
            with serial:
                return searcher.batch_search(texts, k=k, retriever=engine, **kwargs)
        # The Searcher's caches are not safe for concurrent first loads: without warm-up, the first
        # search of each retriever or pipeline runs alone.
        if name in warmed:
            return searcher.batch_search(texts, k=k, retriever=engine, **kwargs)
        with first_use:
            res = searcher.batch_search(texts, k=k, retriever=engine, **kwargs)
            warmed.add(name)
            return res

    def do_search(req: SearchRequest, name: str, engine, knobs: dict) -> bytes:
        t0 = time.perf_counter()
        res = run([req.query], req.k, name, engine, **knobs)
        docnos, scores = res.hits.row(0)
        body = {"hits": hits_json(docnos, scores, req.fields), "retriever": name, "took_ms": 0.0}
        body["took_ms"] = round((time.perf_counter() - t0) * 1000, 3)
        return json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")

    def do_batch(req: BatchRequest, name: str, engine, knobs: dict) -> bytes:
        t0 = time.perf_counter()
        ids = [q.id if isinstance(q, QueryItem) else str(i) for i, q in enumerate(req.queries)]
        texts = [q.query if isinstance(q, QueryItem) else q for q in req.queries]
        res = run(texts, req.k, name, engine, query_ids=ids, **knobs)
        results = []
        for i, qid in enumerate(ids):
            docnos, scores = res.hits.row(i)
            results.append({"id": qid, "hits": hits_json(docnos, scores, req.fields)})
        body = {"results": results, "retriever": name, "took_ms": round((time.perf_counter() - t0) * 1000, 3)}
        return json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")

    def disconnect_watch(request: Request):
        async def gone() -> None:
            while True:
                message = await request.receive()
                if message["type"] == "http.disconnect":
                    return

        return gone

    async def answer(fn, request: Request) -> Response:
        try:
            body = await admission.run(fn, disconnect_watch(request))
        except Overloaded:
            return JSONResponse(
                {"detail": admission.overloaded_message()},
                status_code=503,
                headers={"Retry-After": str(config.retry_after_s)},
            )
        except ClientGone:
            return Response(status_code=499)  # nobody reads it (nginx's "client closed request")
        except SearchTimeout:
            return JSONResponse({"detail": f"the search did not finish within the server's timeout of {config.timeout_s:g} s"}, status_code=504)
        except BraidError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=400)
        except Exception as exc:  # noqa: BLE001 - a bug, not a bad request: log it, answer JSON
            log.exception("search failed")
            return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)
        return Response(body, media_type="application/json")

    # ------------------------------------------------------------ app
    @asynccontextmanager
    async def lifespan(app):
        log.info("serving %s (%d docs): %s", searcher.index_dir, searcher.num_docs, ", ".join(catalog.names))
        try:
            yield
        finally:
            admission.shutdown()

    app = FastAPI(
        title="Braid search",
        version=__version__,
        description=f"Hybrid retrieval over the index `{Path(searcher.index_dir).name}` ({searcher.num_docs} documents).",
        lifespan=lifespan,
    )
    app.state.searcher = searcher
    app.state.catalog = catalog
    app.state.admission = admission
    app.state.config = config

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        # The errors are rebuilt without the offending input: it may be huge or not encodable.
        errs = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))} for e in exc.errors()]
        return JSONResponse({"detail": errs, "message": _error_message(errs)}, status_code=422)

    @app.exception_handler(_BadRequest)
    async def _bad(request: Request, exc: _BadRequest):
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.post("/search", response_model=SearchResponse, responses=errors, summary="Search one query")
    async def search(req: SearchRequest, request: Request):
        name, engine = pick(req)
        knobs = knobs_of(req)
        return await answer(lambda: do_search(req, name, engine, knobs), request)

    @app.post("/batch_search", response_model=BatchResponse, responses=errors, summary="Search several queries")
    async def batch_search(req: BatchRequest, request: Request):
        name, engine = pick(req)
        knobs = knobs_of(req)
        return await answer(lambda: do_batch(req, name, engine, knobs), request)

    @app.get("/health", summary="Liveness and load")
    async def health():
        return {
            "status": "ok" if admission.in_flight < config.capacity else "full",
            "in_flight": admission.in_flight,
            "capacity": config.capacity,
            "max_concurrency": config.max_concurrency,
            "served": admission.served,
            "rejected": admission.rejected,
            "timed_out": admission.timed_out,
            "abandoned": admission.abandoned,
        }

    @app.get("/info", summary="The index and what this server serves")
    async def info():
        return {
            "index": Path(searcher.index_dir).name,
            "num_docs": searcher.num_docs,
            "manifest": searcher.manifest,
            "retrievers": catalog.retrievers,
            "pipelines": {name: {"source": catalog.sources[name], **p.to_dict()} for name, p in catalog.pipelines.items()},
            "default": catalog.default,
            "unavailable": catalog.unavailable,
            "serialized": serialized,
            "limits": config.to_dict(),
            "version": __version__,
        }

    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes, admission=admission)
    return app


def _serial_lock_if_needed(max_concurrency: int) -> "threading.Lock | None":
    """A lock that serialises searches when Numba's parallel kernels ran on its ``workqueue``
    threading layer, which aborts the process when two threads launch parallel kernels at once
    (the ``omp`` and ``tbb`` layers are thread-safe)."""
    import sys

    if max_concurrency <= 1 or "numba" not in sys.modules:
        return None
    try:
        layer = sys.modules["numba"].threading_layer()
    except (ValueError, AttributeError):  # no parallel kernel has run yet
        import os

        layer = os.environ.get("NUMBA_THREADING_LAYER", "default")
        if layer == "default":
            try:
                from numba.np.ufunc import omppool  # noqa: F401
            except ImportError:
                layer = "workqueue"
    if layer == "workqueue":
        log.warning("Numba uses its workqueue threading layer (not thread-safe): searches run one at a time; install tbb or use OpenMP")
        return threading.Lock()
    return None


class _BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message
