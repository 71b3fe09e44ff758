"""The HTTP search service: one index directory behind a JSON API (``braid serve``).

The service owns request validation, admission control, limits, authentication and the mapping of
library errors to HTTP statuses; searching is the :class:`~braid.retrieval.searcher.Searcher`'s
job. Endpoints::

    POST /search        {"query": str, "k": int, "retriever"|"pipeline": str, "fields": bool, "explain": bool, knobs}
                        -> {"hits": [{"rank", "id", "score"(, "title", "text")(, "explain")}], "retriever", "took_ms"
                            (, "fusion", "lists")}; explain: Searcher.explain's figures per hit
    GET  /              the search page (braid/retrieval/serve/static/: plain HTML, CSS and JS)
    POST /batch_search  {"queries": [str | {"id", "query"}], "k", ...} -> {"results": [{"id", "hits"}], ...}
    GET  /health        liveness and load: {"status", "in_flight", "capacity", ...} (HEAD too)
    GET  /info          manifest (server paths cut to names), num_docs, what is served, limits
    GET  /openapi.json, /docs, /redoc

Every error answer is one problem-details shape (:mod:`braid.retrieval.serve.errors`).

Concurrency. The event loop only parses, admits and writes; every search (and the JSON encoding of
its answer) runs in a thread pool of ``max_concurrency`` threads, so tantivy, Numba and FAISS work
never blocks the loop. Admission (:mod:`braid.retrieval.serve.admission`) happens after the body
is read and parsed, so slow clients never hold a search slot; at most ``max_concurrency +
queue_size`` searches are admitted at once (503 beyond), and each must be answered within
``timeout_s`` of its admission (504). At that deadline a queued search is dropped and a running
one stops at its next check: a batch is searched in groups of :data:`BATCH_GROUP` queries with a
check before each group, and answers are encoded with a check per query (and per slice of hits
when ``fields`` are added). One group's retrieval cannot be interrupted.
Retrievers that are not known to be thread-safe (the learned ones) are used by one thread at a
time per index component (``/info`` lists them under ``serialized``).

Limits on what a client can make the server hold: headers (uvicorn protocol,
:mod:`braid.retrieval.serve.protocol`), the body's size and read time and the bytes being read at
once (:mod:`braid.retrieval.serve.guard`), the answer's size (``max_response_bytes``: an answer
that grows past it while being encoded is refused with 422 ``response_too_large`` and its work
stopped).

Files. The server reads only its index directory: pipelines are loaded once at start (the
built-in ones, ``INDEX_DIR/pipelines/*.toml`` and files given to ``create_app``), and a request
can only name one of those, never a path. No answer carries a server path.

FastAPI and pydantic are imported inside :func:`create_app`, so ``import braid`` (and this module)
works without the ``serve`` extra.
"""

# No `from __future__ import annotations`: FastAPI and pydantic read the annotations of the
# request models defined inside create_app at run time.
import json
import logging
import math
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from braid.data.errors import BraidError, OptionError, check_finite, check_nonneg_int, check_positive_int
from braid.retrieval import retrievers as registry
from braid.retrieval.serve.admission import (  # noqa: F401 - re-exported
    Admission,
    Cancelled,
    ClientGone,
    Deadline,
    Overloaded,
    SearchTimeout,
)
from braid.retrieval.serve.auth import AuthConfig
from braid.retrieval.serve.errors import (
    PROBLEM_MEDIA_TYPE,
    problem_response,
    scrub_paths,
)
from braid.retrieval.serve.guard import BODY_KEY, Guard
from braid.retrieval.serve.queries import BLANK_QUERY_MESSAGE, is_blank_query

log = logging.getLogger("braid.serve")

PIPELINE_DIR = "pipelines"
WARM_QUERY = "warm up"
# Queries of a batch searched together between two deadline checks: small enough that a batch
# stops soon after its deadline (one group's time), large enough to keep batched encoding.
BATCH_GROUP = 8
# Hits whose stored fields are fetched and encoded together between two checks.
FIELD_SLICE = 64


# ---------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class ServiceConfig:
    """Limits of one service. All are validated here, at the boundary.

    ``max_concurrency``: searches running at once (threads). ``queue_size``: admitted searches
    waiting for a thread; beyond ``max_concurrency + queue_size`` requests get 503.
    ``timeout_s``: seconds from admission to answer before a 504 (the work stops then too).
    ``max_k``: largest ``k``. ``max_body_bytes``: largest request body (413 beyond).
    ``body_timeout_s``: seconds from the end of the headers to the end of the body (408 beyond).
    ``max_buffered_bytes``: request-body bytes held at once by all requests (503 beyond).
    ``max_batch``: most queries in one ``/batch_search``. ``max_query_chars``: longest query
    string. ``max_response_bytes``: largest answer body (422 ``response_too_large`` beyond).
    """

    max_concurrency: int = 2
    queue_size: int = 32
    timeout_s: float = 10.0
    max_k: int = 1000
    max_body_bytes: int = 1 << 20
    max_batch: int = 256
    max_query_chars: int = 4096
    retry_after_s: int = 1
    body_timeout_s: float = 10.0
    max_buffered_bytes: int = 64 << 20
    max_response_bytes: int = 8 << 20

    def __post_init__(self) -> None:
        for name in ("max_concurrency", "max_k", "max_body_bytes", "max_batch", "max_query_chars", "retry_after_s", "max_buffered_bytes", "max_response_bytes"):
            check_positive_int(name, getattr(self, name))
        check_nonneg_int("queue_size", self.queue_size)
        for name in ("timeout_s", "body_timeout_s"):
            check_finite(name, getattr(self, name), low=0, low_open=True, hint="seconds")
        if self.max_buffered_bytes < self.max_body_bytes:
            raise OptionError("max_buffered_bytes", self.max_buffered_bytes, f"at least max_body_bytes ({self.max_body_bytes})")

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
# Retrievers whose spec is not ``thread_safe`` have each of their components used by one thread at a time;
# different components still overlap. Every built-in retriever is thread-safe now (tantivy's and Lucene's
# searchers, the blocked sparse index's per-thread scratch, FAISS, and the encoders since the SPLADE decoder is
# split off at load instead of swapped during each forward pass); the mechanism stays for retrievers that are not.


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


# ---------------------------------------------------------------------- what clients see
def _valid_text(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (it holds a lone surrogate)") from None
    return value


def _query_text(value: str) -> str:
    """The check of every query string after pydantic's type and length checks: valid Unicode,
    and not blank (:func:`~braid.retrieval.serve.queries.is_blank_query`)."""
    if is_blank_query(_valid_text(value)):
        raise ValueError(BLANK_QUERY_MESSAGE)
    return value


def _validation_problem(errors: list[dict]) -> tuple[str, str]:
    """``(code, detail)`` of pydantic/FastAPI validation errors: the first five, by field."""
    if errors and all(e.get("type") == "json_invalid" for e in errors):
        e = errors[0]
        where = e.get("loc", ("body", None))[-1]
        reason = (e.get("ctx") or {}).get("error", "malformed")
        return "invalid_json", f"the request body is not valid JSON: {reason}" + (f" at offset {where}" if isinstance(where, int) else "")
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "invalid_request", "; ".join(parts) + more


def _parse_failure(body: bytes | None) -> str:
    """Why FastAPI could not parse ``body`` (it only says "There was an error parsing the body")."""
    if body is None:
        return "the request body could not be read as JSON"
    try:
        json.loads(body)
    except RecursionError:
        return "the request body nests too deep to parse"
    except ValueError as exc:  # bad encoding, or Python's limit on the digits of an integer
        if "integer string conversion" in str(exc):
            return f"the request body holds an integer of more than {sys.get_int_max_str_digits()} digits"
        return f"the request body is not valid JSON: {exc}"
    return "the request body could not be read as JSON"


def _public(value):
    """``value`` (from the manifest or a message) with server paths cut to their last component."""
    if isinstance(value, str):
        return scrub_paths(value)
    if isinstance(value, dict):
        return {k: _public(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_public(v) for v in value]
    return value


def _openapi_problem_media(schema: dict) -> dict:
    """Error responses of the OpenAPI schema are ``application/problem+json``, as served."""
    for methods in schema.get("paths", {}).values():
        for operation in methods.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if status[:1] in "45" and "application/json" in content:
                    content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
    return schema


class ResponseTooLarge(Exception):
    """An answer grew past ``max_response_bytes`` while it was being encoded."""

    def __init__(self, done: int, total: int):
        super().__init__(done, total)
        self.done = done
        self.total = total


class _Budget:
    """Bytes of one answer so far, against ``max_response_bytes``."""

    def __init__(self, limit: int, total: int):
        self.limit = limit
        self.total = total
        self.used = 0
        self.done = 0

    def add(self, n: int) -> None:
        self.used += n
        if self.used > self.limit:
            raise ResponseTooLarge(self.done, self.total)


class _BadRequest(Exception):
    def __init__(self, status: int, message: str, code: str = "invalid_request"):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def _dumps(value) -> bytes:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


# ---------------------------------------------------------------------- the app
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
    body_timeout_s: float = 10.0,
    max_buffered_bytes: int = 64 << 20,
    max_response_bytes: int = 8 << 20,
    auth: AuthConfig | None = None,
    pipelines: Sequence[str | Path] = (),
    default: str | None = None,
    warm: bool = True,
    searcher=None,
    runtime: str = "auto",
    query_threads: int | None = None,
):
    """The FastAPI app serving ``index_dir``.

    The index is opened (and, with ``warm``, every retriever and pipeline loaded) now, so a bad
    index directory or pipeline file raises here (IndexFormatError / OptionError), not at the first
    request. The limits are those of :class:`ServiceConfig`. ``auth``: the bearer token every
    endpoint requires (:class:`~braid.retrieval.serve.auth.AuthConfig`; default none).
    ``pipelines``: extra TOML pipeline files, read once now. ``default``: the retriever or
    pipeline used when a request names none (default: ``hybrid`` when the index has several
    retrievers, else its only one). ``searcher``: an already open Searcher (tests). ``runtime``:
    what runs the query encoders (``"auto"``, ``"torch"``, ``"onnx"``, ``"onnx-int8"``; see
    :class:`~braid.retrieval.searcher.Searcher`), a server setting, not a request field: one
    runtime per process keeps one loaded model per encoder. ``query_threads``: intra-op threads of
    each query encoder (``braid serve`` gives ``cores // max_concurrency``; None: the runtime's default).
    """
    try:
        from fastapi import FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import Response
        from pydantic import (
            AfterValidator,
            BaseModel,
            ConfigDict,
            Field,
            StrictBool,
            create_model,
        )
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
        body_timeout_s=body_timeout_s,
        max_buffered_bytes=max_buffered_bytes,
        max_response_bytes=max_response_bytes,
    )
    auth = auth if auth is not None else AuthConfig()
    if not isinstance(auth, AuthConfig):
        raise OptionError("auth", type(auth).__name__, "an AuthConfig")
    if searcher is None:
        searcher = Searcher(index_dir, runtime=runtime, query_threads=query_threads)
    catalog = load_catalog(searcher, pipelines, default=default, warm=warm)
    from braid.data.lazy import load_all

    load_all()  # numba's kernels now, not at the fifth request (and before the threading-layer check below)
    serialized = serialize_unsafe_retrievers(searcher, catalog.retrievers)
    admission = Admission(config)

    # ------------------------------------------------------------ request and response schemas
    QueryText = Annotated[str, Field(strict=True, min_length=1, max_length=config.max_query_chars), AfterValidator(_query_text)]
    RetrieverName = Literal[tuple(catalog.names) + tuple(catalog.aliases)]  # type: ignore[valid-type]
    PipelineName = Literal[tuple(catalog.pipelines) + tuple(catalog.aliases)] if catalog.pipelines else Literal[None]  # type: ignore[valid-type]
    K = Annotated[int, Field(strict=True, ge=1, le=config.max_k, description=f"hits to return, 1..{config.max_k}")]

    class BaseOptions(BaseModel):
        model_config = ConfigDict(extra="forbid")
        k: K = 10
        retriever: Optional[RetrieverName] = Field(None, description="a retriever (or pipeline) name; see GET /info. Default: " + catalog.default)
        pipeline: Optional[PipelineName] = Field(None, description="a pipeline served by this server (built-in or INDEX_DIR/pipelines/NAME.toml); see GET /info")
        fields: StrictBool = Field(False, description="add each hit's stored title and text")
        filter: Optional[Union[dict, str]] = Field(None, description='a metadata filter, applied inside every retriever before its top-k: {"field": "year", "gte": 2000}, {"and": [...]}, or the string form "year >= 2000 and lang = en"')

    # The retrievers' query knobs, typed and bounded as their specs say (braid.retrieval.retrievers).
    Options = create_model("Options", __base__=BaseOptions, **{name: (Optional[_knob_type(knob)], Field(None, description=knob.help)) for name, knob in registry.KNOBS.items()})

    class SearchRequest(Options):
        query: QueryText
        explain: StrictBool = Field(
            False,
            description="add, per hit, each retriever's rank, score, normalised score and contribution to the fused score "
            "(they sum to it), and each retriever's own top 10 (lists)",
        )

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

    class Contribution(BaseModel):
        name: str
        weight: float
        rank: Optional[int] = Field(None, description="1-based rank in this retriever's list; null: not in it")
        score: Optional[float] = Field(None, description="the retriever's own score")
        normalized: Optional[float] = Field(None, description="the score after the fusion's normalisation (RRF: 1/(rrf_k+rank))")
        fill: Optional[float] = Field(None, description="for a document not in the list: the normalised score it is counted as")
        contribution: float
        share: Optional[float] = Field(None, description="contribution / fused_score")

    class Explanation(BaseModel):
        fused_score: Optional[float]
        retrievers: list[Contribution]

    class ExplainedHit(Hit):
        explain: Optional[Explanation] = None

    class ListHit(BaseModel):
        rank: int
        id: str
        score: float
        title: Optional[str] = None

    class RetrieverList(BaseModel):
        name: str
        prf: bool
        weight: float
        hits: list[ListHit]

    class SearchResponse(BaseModel):
        hits: list[ExplainedHit]
        retriever: str
        generation: int = Field(description="the index generation searched (a live index counts its commits)")
        took_ms: float
        fusion: Optional[dict] = Field(None, description="with explain: the fusion method and parameters")
        lists: Optional[list[RetrieverList]] = Field(None, description="with explain: each retriever's own top 10")

    class QueryResult(BaseModel):
        id: str
        hits: list[Hit]

    class BatchResponse(BaseModel):
        results: list[QueryResult]
        retriever: str
        generation: int = Field(description="the index generation searched (of the first queries, when a commit lands during a long batch)")
        took_ms: float

    class Problem(BaseModel):
        """Every error answer (RFC 9457 problem details; see braid.retrieval.serve.errors)."""

        type: str = "about:blank"
        title: str
        status: int
        code: str
        detail: str
        errors: Optional[list[dict]] = None

    def problem_doc(text: str) -> dict:
        return {"model": Problem, "description": text}

    common = {
        401: problem_doc("no bearer token (when the server requires one)"),
        403: problem_doc("a wrong bearer token"),
    }
    errors = {
        **common,
        400: problem_doc("an option the chosen retriever cannot take"),
        408: problem_doc("the headers or body did not arrive within the read timeouts"),
        413: problem_doc("request body too large"),
        422: problem_doc("invalid request (detail names the field; errors lists each problem), or an answer over max_response_bytes"),
        503: problem_doc("overloaded: retry after Retry-After seconds"),
        504: problem_doc("the search took longer than the server's timeout and was stopped"),
    }

    # ------------------------------------------------------------ work done in the pool
    def pick(opts) -> tuple[str, Any]:
        if opts.retriever is not None and opts.pipeline is not None:
            raise _BadRequest(422, "give either retriever or pipeline, not both")
        name = opts.pipeline or opts.retriever or catalog.default
        name = catalog.aliases.get(name, name)
        return name, catalog.engine(name)

    def knobs_of(opts) -> dict:
        knobs = {key: getattr(opts, key) for key in registry.KNOBS if getattr(opts, key) is not None}
        if opts.filter is not None:
            from braid.data.filters import parse_filter

            try:
                knobs["filter"] = parse_filter(opts.filter, "filter")
            except BraidError as exc:
                raise _BadRequest(422, str(exc)) from None
        return knobs

    def encode_hits(docnos, scores, fields: bool, deadline: Deadline, budget: _Budget, pinned) -> bytes:
        """One query's hits as a JSON array, counted against the answer's budget (ids and stored
        fields from ``pinned``: the generation the search ran on)."""
        ids = pinned.doc_ids
        hits = [{"rank": r + 1, "id": ids[d], "score": float(s)} for r, (d, s) in enumerate(zip(docnos.tolist(), scores.tolist()))]
        if not fields or not hits:
            out = _dumps(hits)
            budget.add(len(out))
            return out
        parts = []
        for start in range(0, len(hits), FIELD_SLICE):
            deadline.check()
            part = hits[start : start + FIELD_SLICE]
            for hit, stored in zip(part, pinned.documents(docnos[start : start + FIELD_SLICE])):
                hit["title"] = stored["title"]
                hit["text"] = stored["text"]
            encoded = _dumps(part)[1:-1]
            budget.add(len(encoded) + 1)
            parts.append(encoded)
        return b"[" + b",".join(parts) + b"]"

    warmed = set(catalog.names) if warm else set()
    first_use = threading.Lock()
    serial = _serial_lock_if_needed(config.max_concurrency)

    def run(texts, k, name, engine, how=None, **kwargs):
        how = how or searcher.batch_search
        # a live index: one ``stat`` of manifest.json per request, a reload when it changed; each
        # search runs on one generation (its results carry it: res.context)
        searcher.maybe_reload()
        if serial is not None:
            with serial:
                return how(texts, k=k, retriever=engine, **kwargs)
        # The Searcher's caches are not safe for concurrent first loads: without warm-up, the first
        # search of each retriever or pipeline runs alone.
        if name in warmed:
            return how(texts, k=k, retriever=engine, **kwargs)
        with first_use:
            res = how(texts, k=k, retriever=engine, **kwargs)
            warmed.add(name)
            return res

    def do_explain(req: SearchRequest, name: str, engine, knobs: dict, deadline: Deadline) -> bytes:
        t0 = time.perf_counter()
        deadline.check()
        got = run(req.query, req.k, name, engine, how=searcher.explain, fields=req.fields, **knobs)
        deadline.check()
        got["retriever"] = name
        got["took_ms"] = round((time.perf_counter() - t0) * 1000, 3)
        body = _dumps(got)
        _Budget(config.max_response_bytes, 1).add(len(body))
        return body

    def do_search(req: SearchRequest, name: str, engine, knobs: dict, deadline: Deadline) -> bytes:
        t0 = time.perf_counter()
        budget = _Budget(config.max_response_bytes, 1)
        deadline.check()
        res = run([req.query], req.k, name, engine, **knobs)
        pinned = res.context if res.context is not None else searcher
        docnos, scores = res.hits.row(0)
        hits = encode_hits(docnos, scores, req.fields, deadline, budget, pinned)
        tail = _dumps({"retriever": name, "generation": pinned.generation, "took_ms": round((time.perf_counter() - t0) * 1000, 3)})
        return b'{"hits":' + hits + b"," + tail[1:]

    def do_batch(req: BatchRequest, name: str, engine, knobs: dict, deadline: Deadline) -> bytes:
        t0 = time.perf_counter()
        ids = [q.id if isinstance(q, QueryItem) else str(i) for i, q in enumerate(req.queries)]
        texts = [q.query if isinstance(q, QueryItem) else q for q in req.queries]
        budget = _Budget(config.max_response_bytes, len(texts))
        results = []
        generation = None
        for start in range(0, len(texts), BATCH_GROUP):
            deadline.check()
            group = slice(start, start + BATCH_GROUP)
            res = run(texts[group], req.k, name, engine, query_ids=ids[group], **knobs)
            pinned = res.context if res.context is not None else searcher
            generation = pinned.generation if generation is None else generation
            for i, qid in enumerate(ids[group]):
                deadline.check()
                docnos, scores = res.hits.row(i)
                head = b'{"id":' + _dumps(qid) + b',"hits":'
                budget.add(len(head) + 2)
                results.append(head + encode_hits(docnos, scores, req.fields, deadline, budget, pinned) + b"}")
                budget.done += 1
        tail = _dumps({"retriever": name, "generation": generation, "took_ms": round((time.perf_counter() - t0) * 1000, 3)})
        return b'{"results":[' + b",".join(results) + b"]," + tail[1:]

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
            return problem_response(503, "overloaded", admission.overloaded_message(), headers={"Retry-After": str(config.retry_after_s)})
        except ClientGone:  # nobody reads it (nginx's "client closed request")
            return problem_response(499, "client_closed", "the client left before its answer was ready")
        except SearchTimeout:
            return problem_response(504, "timeout", f"the search did not finish within the server's timeout of {config.timeout_s:g} s (timeout_s); its work was stopped")
        except ResponseTooLarge as exc:
            where = f" (after {exc.done} of {exc.total} queries)" if exc.total > 1 else ""
            return problem_response(
                422,
                "response_too_large",
                f"the answer would be over max_response_bytes = {config.max_response_bytes} bytes{where}; ask for fewer queries, a smaller k or no fields",
            )
        except BraidError as exc:
            return problem_response(400, "bad_option", str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug, not a bad request: log it, answer the problem shape
            log.exception("search failed")
            return problem_response(500, "internal_error", f"internal error: {type(exc).__name__}")
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
        description=f"Hybrid retrieval over the index `{Path(searcher.index_dir).name}` ({searcher.num_docs} documents). "
        "Every error answer is an RFC 9457 problem-details object (application/problem+json): "
        '{"type", "title", "status", "code", "detail"(, "errors")}.',
        lifespan=lifespan,
        responses=common,
    )
    app.state.searcher = searcher
    app.state.catalog = catalog
    app.state.admission = admission
    app.state.config = config
    app.state.auth = auth

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        # The errors are rebuilt without the offending input: it may be huge or not encodable.
        errs = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))} for e in exc.errors()]
        code, detail = _validation_problem(exc.errors())
        return problem_response(422, code, detail, errs)

    @app.exception_handler(_BadRequest)
    async def _bad(request: Request, exc: _BadRequest):
        errs = [{"loc": ["body"], "msg": exc.message, "type": "value_error"}] if exc.code == "invalid_request" else None
        return problem_response(exc.status, exc.code, exc.message, errs)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        status, headers = exc.status_code, getattr(exc, "headers", None)
        if status == 404:
            return problem_response(404, "not_found", f"no endpoint {request.url.path}; see GET /docs", headers=headers)
        if status == 405:
            return problem_response(405, "method_not_allowed", f"{request.method} is not allowed on {request.url.path}", headers=headers)
        if status == 400:  # FastAPI's "There was an error parsing the body"
            return problem_response(422, "invalid_json", _parse_failure(request.scope.get(BODY_KEY)), headers=headers)
        return problem_response(status, "internal_error" if status >= 500 else "bad_http", str(exc.detail), headers=headers)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        log.error("request failed: %s: %s", type(exc).__name__, exc)
        return problem_response(500, "internal_error", f"internal error: {type(exc).__name__}")

    @app.post("/search", response_model=SearchResponse, responses=errors, summary="Search one query")
    async def search(req: SearchRequest, request: Request):
        name, engine = pick(req)
        knobs = knobs_of(req)
        work = do_explain if req.explain else do_search
        return await answer(lambda deadline: work(req, name, engine, knobs, deadline), request)

    @app.post("/batch_search", response_model=BatchResponse, responses=errors, summary="Search several queries")
    async def batch_search(req: BatchRequest, request: Request):
        name, engine = pick(req)
        knobs = knobs_of(req)
        return await answer(lambda deadline: do_batch(req, name, engine, knobs, deadline), request)

    # ------------------------------------------------------------ writes (a live index)
    class DocumentsRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        documents: list[dict] = Field(..., min_length=1, description='BEIR records {"_id", "title", "text", "metadata"}; an id already indexed is updated')

    class DeleteRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        ids: list[Annotated[str, Field(strict=True, min_length=1)]] = Field(..., min_length=1, description="document ids to delete")

    write_lock = threading.Lock()
    writer_box: dict = {}

    def write(op) -> Response:
        """One commit, then the searcher reloads: the next search after the answer sees it."""
        from braid.index.generations import IndexLockedError
        from braid.retrieval.live import Index

        with write_lock:
            try:
                if "index" not in writer_box:
                    writer_box["index"] = Index(searcher.index_dir, device=searcher.device, log=log.info)
                result = op(writer_box["index"])
            except IndexLockedError as exc:
                return problem_response(409, "locked", str(exc))
            except BraidError as exc:
                return problem_response(400, "bad_documents", str(exc))
            searcher.reload()
        return Response(_dumps(result.to_dict()), media_type="application/json")

    @app.post("/documents", responses=errors, summary="Add or update documents (a write token is required)")
    async def add_documents(req: DocumentsRequest):
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(write, lambda index: index.add(req.documents))

    @app.delete("/documents", responses=errors, summary="Delete documents by id (a write token is required)")
    async def delete_documents(req: DeleteRequest):
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(write, lambda index: index.delete(req.ids))

    def load() -> dict:
        return {
            "status": "ok" if admission.in_flight < config.capacity else "full",
            "in_flight": admission.in_flight,
            "capacity": config.capacity,
            "max_concurrency": config.max_concurrency,
            "served": admission.served,
            "rejected": admission.rejected,
            "timed_out": admission.timed_out,
            "abandoned": admission.abandoned,
            "stopped": admission.stopped,
        }

    @app.get("/health", summary="Liveness and load")
    async def health():
        return load()

    @app.head("/health", summary="Liveness (headers only; X-Braid-Status says ok or full)")
    async def health_head():
        return Response(status_code=200, headers={"X-Braid-Status": load()["status"], "Cache-Control": "no-store"})

    def source_of(name: str) -> str:
        source = catalog.sources[name]
        if source == "built-in" or source.startswith(PIPELINE_DIR + "/"):
            return source
        return "--pipeline " + Path(source).name

    @app.get("/info", summary="The index and what this server serves (no server paths)")
    async def info():
        return _public({
            "index": Path(searcher.index_dir).name,
            "num_docs": searcher.num_docs,
            "manifest": searcher.manifest,
            "retrievers": catalog.retrievers,
            "pipelines": {name: {"source": source_of(name), **p.to_dict()} for name, p in catalog.pipelines.items()},
            "default": catalog.default,
            "unavailable": catalog.unavailable,
            "serialized": serialized,
            # what encodes queries, per loaded retriever that runs a model (braid.retrieval.searcher.Searcher.recipe)
            "runtime": {"requested": searcher.runtime, "queries": searcher.query_runtimes([n for n in catalog.retrievers if n in searcher._retrievers]),
                        "query_threads": searcher.context.query_threads},
            "limits": config.to_dict(),
            "auth": "bearer" if auth.enabled else None,
            "writes": auth.writes,
            "generation": searcher.generation,
            # the documents' metadata fields and their kinds (keyword / integer / float / date): what a filter can name
            "metadata": searcher.context.metadata.kinds(),
            "version": __version__,
        })

    page = _page_files()

    @app.get("/", include_in_schema=False)
    async def index_page():
        body, media = page["index.html"]
        return Response(body, media_type=media, headers=_PAGE_HEADERS)

    @app.get("/static/{name}", include_in_schema=False)
    async def page_file(name: str):
        if name not in page or name == "index.html":
            return problem_response(404, "not_found", f"no file {name} in the search page")
        body, media = page[name]
        return Response(body, media_type=media, headers=_PAGE_HEADERS)

    plain_openapi = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = _openapi_problem_media(plain_openapi())
        return app.openapi_schema

    app.openapi = openapi
    # The page's files hold no index data: they load without a token, and the page asks for one.
    app.add_middleware(Guard, config=config, admission=admission, auth=auth, public_paths=PAGE_PATHS, scopes={"/documents": "write"})
    return app


# ---------------------------------------------------------------------- the search page
PAGE_FILES = {"index.html": "text/html; charset=utf-8", "braid.css": "text/css; charset=utf-8", "braid.js": "text/javascript; charset=utf-8"}
PAGE_PATHS = ("/",) + tuple(f"/static/{name}" for name in PAGE_FILES if name != "index.html")
# The page runs only its own files: no inline script, no other origin.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def _page_files() -> dict[str, tuple[bytes, str]]:
    """The search page (package data under ``braid/retrieval/serve/static``), read once."""
    from importlib import resources

    folder = resources.files("braid.retrieval.serve") / "static"
    return {name: ((folder / name).read_bytes(), media) for name, media in PAGE_FILES.items()}


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

