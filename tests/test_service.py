"""``braid serve``: the API through a real HTTP client against servers started here, on loopback.

References: the library's ``Searcher`` (what the HTTP layer must return unchanged), hand-known
term matches, the manifest file itself. Servers run uvicorn in a thread (or the CLI in a
subprocess) on an ephemeral port; blocked searches are driven by events, never by sleeps.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

fastapi = pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from braid.data.errors import IndexFormatError, OptionError  # noqa: E402
from braid.retrieval.build.builder import BuildOptions, build_index  # noqa: E402
from braid.retrieval.searcher import Searcher  # noqa: E402
from braid.retrieval.serve.app import ServiceConfig, create_app  # noqa: E402
from braid.retrieval.serve.client import BraidClient, ServiceError  # noqa: E402

from tests.serve_support import (  # noqa: E402
    DOCS,
    QUERIES,
    RRF_PIPELINE,
    LiveServer,
    assert_problem,
    build_toy_index,
)
from tests.serve_support import gated_server as _gated  # noqa: E402
from tests.serve_support import wait_for as _wait  # noqa: E402

LIMITS = dict(max_k=50, max_batch=4, max_body_bytes=4096, max_query_chars=200)


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory) -> Path:
    index = build_toy_index(tmp_path_factory.mktemp("serve"))
    (index / "pipelines").mkdir()
    (index / "pipelines" / "mine.toml").write_text(RRF_PIPELINE)
    (index / "pipelines" / "broken.toml").write_text("this is not toml [")
    # A valid pipeline outside the index directory: no request may reach it.
    (index.parent / "outside.toml").write_text(RRF_PIPELINE.replace("mine", "outside"))
    return index


@pytest.fixture(scope="module")
def live(index_dir):
    server = LiveServer(create_app(index_dir, max_concurrency=2, queue_size=8, timeout_s=30, **LIMITS))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http(live):
    with httpx.Client(base_url=live.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def library(index_dir) -> Searcher:
    return Searcher(index_dir)


def _expected(library: Searcher, query: str, k: int, retriever=None) -> list[tuple[str, float]]:
    return [(h["id"], h["score"]) for h in library.search(query, k=k, retriever=retriever)]


def _pairs(hits) -> list[tuple[str, float]]:
    return [(h["id"], h["score"]) for h in hits]


def _same(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> bool:
    """Same ids in the same order, scores equal up to float32 rounding."""
    return [d for d, _ in got] == [d for d, _ in want] and all(math.isclose(a, b, rel_tol=1e-6) for (_, a), (_, b) in zip(got, want))


# ---------------------------------------------------------------------- happy paths
def test_health_and_info(http, index_dir):
    health = http.get("/health").json()
    assert health["status"] == "ok" and health["in_flight"] == 0 and health["capacity"] == 10
    info = http.get("/info").json()
    assert info["num_docs"] == len(DOCS)
    manifest = json.loads((index_dir / "manifest.json").read_text())
    # The manifest as stored, but its server paths (corpus, source) cut to their names.
    assert Path(manifest["corpus"]["path"]).is_absolute() and info["manifest"]["corpus"]["path"] == "corpus.jsonl"
    assert info["manifest"]["components"] == manifest["components"] and info["manifest"]["num_docs"] == manifest["num_docs"]
    assert info["retrievers"] == ["bm25"]
    assert {"hybrid", "hybrid-rrf", "mine"} <= set(info["pipelines"])
    assert info["pipelines"]["mine"]["source"] == "pipelines/mine.toml"
    assert info["pipelines"]["mine"]["fusion"]["method"] == "rrf"
    assert "broken" in info["unavailable"] and "not valid TOML" in info["unavailable"]["broken"]
    assert info["default"] == "bm25"
    assert info["runtime"] == {"requested": "auto", "queries": {}, "query_threads": None}  # BM25 encodes no queries with a model
    assert info["limits"]["max_k"] == LIMITS["max_k"]


def test_openapi_is_served(http):
    spec = http.get("/openapi.json").json()
    assert {"/search", "/batch_search", "/health", "/info"} <= set(spec["paths"])
    body = spec["paths"]["/search"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("SearchRequest")
    assert http.get("/docs").status_code == 200


@pytest.mark.parametrize("query", QUERIES)
@pytest.mark.parametrize("k", [1, 3, 50])
def test_search_returns_what_the_library_returns(http, library, query, k):
    res = http.post("/search", json={"query": query, "k": k})
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["retriever"] == "bm25"
    assert [h["rank"] for h in body["hits"]] == list(range(1, len(body["hits"]) + 1))
    got, want = _pairs(body["hits"]), _expected(library, query, k)
    assert [d for d, _ in got] == [d for d, _ in want]
    assert all(math.isclose(a, b, rel_tol=1e-6) for (_, a), (_, b) in zip(got, want))


def test_search_matches_hand_known_terms_and_fields(http):
    # The stem "cat" occurs in d1 ("Cats"), d4 ("cats") and d5 ("cat") only.
    hits = http.post("/search", json={"query": "cat", "k": 10, "fields": True}).json()["hits"]
    assert {h["id"] for h in hits} == {"d1", "d4", "d5"}
    by_id = {d["_id"]: d for d in DOCS}
    for h in hits:
        assert h["title"] == by_id[h["id"]]["title"] and h["text"] == by_id[h["id"]]["text"]
    unicode = http.post("/search", json={"query": "Crème brûlée 猫", "k": 3, "fields": True}).json()["hits"]
    assert unicode[0]["id"] == "d7" and unicode[0]["title"] == "Crème brûlée"
    # Queries with text that BM25 does not index are valid and simply find nothing.
    for q in ["the of and", "🙂"]:
        res = http.post("/search", json={"query": q, "k": 5})
        assert res.status_code == 200 and res.json()["hits"] == [], (q, res.text)


def test_batch_search(http, library):
    items = [QUERIES[0], {"id": "q-wolf", "query": QUERIES[2]}, QUERIES[1]]
    body = http.post("/batch_search", json={"queries": items, "k": 3}).json()
    assert [r["id"] for r in body["results"]] == ["0", "q-wolf", "2"]
    for r, q in zip(body["results"], [QUERIES[0], QUERIES[2], QUERIES[1]]):
        assert [d for d, _ in _pairs(r["hits"])] == [d for d, _ in _expected(library, q, 3)]


@pytest.mark.parametrize("name", ["hybrid", "hybrid-rrf", "mine", "mine.toml"])
def test_pipelines_by_name(http, library, index_dir, name):
    res = http.post("/search", json={"query": "small cats", "k": 5, "pipeline": name})
    assert res.status_code == 200, res.text
    spec = index_dir / "pipelines" / "mine.toml" if name.startswith("mine") else name
    want = library.batch_search(["small cats"], k=5, retriever=spec)
    docnos, scores = want.hits.row(0)
    assert [h["id"] for h in res.json()["hits"]] == [library.doc_ids[d] for d in docnos]
    assert [h["score"] for h in res.json()["hits"]] == pytest.approx(scores.tolist(), rel=1e-6)
    # A pipeline may also be named in "retriever", as in the library.
    again = http.post("/search", json={"query": "small cats", "k": 5, "retriever": name}).json()
    assert again["hits"] == res.json()["hits"]


def test_client_helper(live, library):
    with BraidClient(live.url) as client:
        assert client.health()["status"] == "ok"
        assert client.info()["num_docs"] == len(DOCS)
        hits = client.search("dogs bark", k=3, fields=True)
        assert _same(_pairs(hits), _expected(library, "dogs bark", 3))
        titles = {d["_id"]: d["title"] for d in DOCS}
        assert [h["title"] for h in hits] == [titles[h["id"]] for h in hits]  # fields=True: each hit's own title
        batch = client.batch_search({"a": "wolf", "b": "cats"}, k=2, pipeline="hybrid")
        assert set(batch) == {"a", "b"} and batch["a"][0]["id"] == "d3"
        with pytest.raises(ServiceError) as err:
            client.search("dogs", k=0)
        assert err.value.status == 422 and "k" in err.value.message and err.value.code == "invalid_request"
        with pytest.raises(ServiceError) as err:
            client.search("dogs", heap_factor=0.5)
        assert err.value.status == 400 and "bm25" in err.value.message and err.value.code == "bad_option"


# ---------------------------------------------------------------------- bad requests: 4xx, never 500
BAD_JSON = [
    ({"k": 3}, 422, "query"),
    ({"query": "", "k": 3}, 422, "query"),
    ({"query": "   ", "k": 3}, 422, "visible character"),
    ({"query": "\x00", "k": 3}, 422, "visible character"),
    ({"query": "\x00\x00 \t\n\u200b\ufeff", "k": 3}, 422, "visible character"),
    ({"query": None}, 422, "query"),
    ({"query": 12}, 422, "query"),
    ({"query": ["cats"]}, 422, "query"),
    ({"query": "x" * 201}, 422, "query"),
    ({"query": "cats", "k": 0}, 422, "k"),
    ({"query": "cats", "k": -1}, 422, "k"),
    ({"query": "cats", "k": 51}, 422, "k"),
    ({"query": "cats", "k": 10**40}, 422, "k"),
    ({"query": "cats", "k": "5"}, 422, "k"),
    ({"query": "cats", "k": 2.5}, 422, "k"),
    ({"query": "cats", "k": True}, 422, "k"),
    ({"query": "cats", "k": 1e300}, 422, "k"),
    ({"query": "cats", "retriever": "dense"}, 422, "retriever"),
    ({"query": "cats", "retriever": "BM25"}, 422, "retriever"),
    ({"query": "cats", "pipeline": "bm25"}, 422, "pipeline"),
    ({"query": "cats", "pipeline": "broken"}, 422, "pipeline"),
    ({"query": "cats", "retriever": "bm25", "pipeline": "hybrid"}, 422, "retriever or pipeline"),
    ({"query": "cats", "fields": "yes"}, 422, "fields"),
    ({"query": "cats", "colour": "red"}, 422, "colour"),
    ({"query": "cats", "heap_factor": 0.5}, 400, "bm25"),
    ({"query": "cats", "heap_factor": 2.5}, 422, "heap_factor"),
    ({"query": "cats", "nprobe": 0}, 422, "nprobe"),
]


@pytest.mark.parametrize("body,status,field", BAD_JSON)
def test_bad_search_requests(http, body, status, field):
    res = http.post("/search", json=body)
    payload = assert_problem(res, status)
    assert field in payload["detail"], payload
    if status == 422:
        assert payload["code"] == "invalid_request" and payload["errors"]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"query": "cats", "heap_factor": NaN}',
        b'{"query": "cats", "k": Infinity}',
        b'{"query": "\\ud800"}',
        b'{"query": "cats", "k": 3',
        b"\xff\xfe\x00garbage",
        b"[]",
        b"null",
        b'"cats"',
        b"",
    ],
)
def test_malformed_bodies(http, raw):
    res = http.post("/search", content=raw, headers={"content-type": "application/json"})
    assert_problem(res, 422)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"])
def test_other_content_types(http, content_type):
    res = http.post("/search", content=b"query=cats", headers={"content-type": content_type})
    assert_problem(res)


@pytest.mark.parametrize(
    "body,field",
    [
        ({"queries": [], "k": 3}, "queries"),
        ({"queries": ["a"] * 5, "k": 3}, "queries"),
        ({"queries": "cats"}, "queries"),
        ({"queries": [{"query": "cats"}]}, "id"),
        ({"queries": [{"id": "a", "query": "cats", "x": 1}]}, "x"),
        ({"queries": [{"id": "", "query": "cats"}]}, "id"),
        ({"queries": [7]}, "queries"),
        ({"k": 3}, "queries"),
    ],
)
def test_bad_batch_requests(http, body, field):
    res = http.post("/batch_search", json=body)
    assert field in assert_problem(res, 422, "invalid_request")["detail"]


def test_oversized_bodies_get_413(http):
    res = http.post("/search", json={"query": "cats " * 2000, "k": 3})
    assert "limit" in assert_problem(res, 413, "body_too_large")["detail"]
    # Without a Content-Length (chunked transfer) the limit holds too.
    res = http.post("/search", content=(b'{"query": "' + b"a" * 1000 for _ in range(10)), headers={"content-type": "application/json"})
    assert_problem(res, 413, "body_too_large")


def test_malformed_content_length_is_not_a_server_error(live):
    host, port = live.url.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: abc\r\n\r\n{}")
        status_line = sock.recv(4096).split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 4"), status_line


@pytest.mark.parametrize("name", ["../outside", "../outside.toml", "pipelines/mine.toml", "/etc/passwd", "OUTSIDE"])
def test_no_path_reaches_files(http, index_dir, name):
    outside = index_dir.parent / "outside.toml"
    for value in (name, str(outside)):
        for key in ("pipeline", "retriever"):
            res = http.post("/search", json={"query": "cats", key: value})
            assert res.status_code == 422, (key, value, res.text)


def test_unknown_paths_and_methods(http):
    assert_problem(http.get("/search"), 405, "method_not_allowed")
    assert_problem(http.get("/nope"), 404, "not_found")
    assert_problem(http.get("/../../etc/passwd"), 404, "not_found")
    assert_problem(http.delete("/health"), 405)


# ---------------------------------------------------------------------- load shedding, timeouts, shutdown
def _post_in_thread(url: str, body: dict, out: list):
    def go():
        with httpx.Client(base_url=url, timeout=60) as c:
            out.append(c.post("/search", json=body))

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_overload_gets_503_not_a_queue_without_bound(index_dir, library, http):
    if http == "httptools":
        pytest.importorskip("httptools")
    searcher, server = _gated(index_dir, http=http, max_concurrency=1, queue_size=1, timeout_s=60)
    try:
        answers: list = []
        threads = [_post_in_thread(server.url, {"query": "block", "k": 2}, answers) for _ in range(2)]
        with httpx.Client(base_url=server.url, timeout=30) as c:
            _wait(lambda: c.get("/health").json()["in_flight"] == 2, "two admitted searches")
            assert c.get("/health").json()["status"] == "full"
            res = c.post("/search", json={"query": "cats", "k": 2})
            assert res.status_code == 503 and res.headers["retry-after"] == "1"
            assert "overloaded" in assert_problem(res, 503, "overloaded")["detail"]
            with BraidClient(server.url) as client, pytest.raises(ServiceError) as err:
                client.search("cats")
            assert err.value.status == 503 and err.value.retry_after == 1.0
            # Shed before its body is read; the connection stays usable.
            res = c.post("/batch_search", json={"queries": ["cats " * 100] * 4})
            assert "overloaded" in assert_problem(res, 503, "overloaded")["detail"]
            # Health and info are never queued behind searches.
            assert c.get("/info").status_code == 200
            searcher.gate.set()
            for t in threads:
                t.join(30)
            assert [a.status_code for a in answers] == [200, 200]
            _wait(lambda: c.get("/health").json()["in_flight"] == 0, "slots to free")
            res = c.post("/search", json={"query": "cats", "k": 2})
            assert res.status_code == 200
            assert _same(_pairs(res.json()["hits"]), _expected(library, "cats", 2))
            assert c.get("/health").json()["rejected"] == 3
    finally:
        searcher.gate.set()
        server.stop()


def test_timeout_gets_504_and_a_running_search_keeps_its_slot(index_dir):
    searcher, server = _gated(index_dir, max_concurrency=1, queue_size=4, timeout_s=0.2)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            res = c.post("/search", json={"query": "block"})
            assert "timeout" in assert_problem(res, 504, "timeout")["detail"]
            # The blocked search still runs; a queued one times out and is dropped before it starts.
            res = c.post("/search", json={"query": "cats"})
            assert res.status_code == 504
            assert c.get("/health").json()["in_flight"] == 1
            searcher.gate.set()
            _wait(lambda: c.get("/health").json()["in_flight"] == 0, "the blocked search to finish")
            assert c.post("/search", json={"query": "cats"}).status_code == 200
            assert c.get("/health").json()["timed_out"] == 2
    finally:
        searcher.gate.set()
        server.stop()


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_a_queued_search_whose_client_left_is_dropped(index_dir, http):
    if http == "httptools":
        pytest.importorskip("httptools")
    searcher, server = _gated(index_dir, http=http, max_concurrency=1, queue_size=4, timeout_s=60)
    try:
        answers: list = []
        t = _post_in_thread(server.url, {"query": "block cats"}, answers)
        assert searcher.entered.acquire(timeout=20)
        with httpx.Client(base_url=server.url, timeout=30) as c:
            with pytest.raises(httpx.ReadTimeout), httpx.Client(base_url=server.url, timeout=0.5) as impatient:
                impatient.post("/search", json={"query": "cats"})
            _wait(lambda: c.get("/health").json()["abandoned"] == 1, "the abandoned search to be dropped")
            assert c.get("/health").json()["in_flight"] == 1  # only the running one
            searcher.gate.set()
            t.join(30)
            assert [a.status_code for a in answers] == [200]
            _wait(lambda: c.get("/health").json()["in_flight"] == 0, "slots to free")
    finally:
        searcher.gate.set()
        server.stop()


def test_a_bug_is_a_json_500_and_the_server_keeps_serving(index_dir):
    searcher, server = _gated(index_dir)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            res = c.post("/search", json={"query": "explode"})
            assert res.status_code == 500 and res.headers["content-type"] == "application/problem+json"
            assert res.json()["detail"] == "internal error: RuntimeError" and res.json()["code"] == "internal_error"
            assert c.post("/search", json={"query": "cats"}).status_code == 200
            assert c.get("/health").json()["in_flight"] == 0
    finally:
        server.stop()


def test_graceful_shutdown_finishes_running_requests(index_dir):
    searcher, server = _gated(index_dir, max_concurrency=1, queue_size=1, timeout_s=60)
    answers: list = []
    try:
        t = _post_in_thread(server.url, {"query": "block cats", "k": 1}, answers)
        assert searcher.entered.acquire(timeout=20)
        server.server.should_exit = True

        def refused() -> bool:
            try:
                with httpx.Client(base_url=server.url, timeout=2) as c:
                    c.get("/health")
            except httpx.TransportError:
                return True
            return False

        _wait(refused, "the listener to close")
        assert server.thread.is_alive()  # still draining the running request
        searcher.gate.set()
        t.join(30)
        server.thread.join(30)
        assert not server.thread.is_alive()
        assert [a.status_code for a in answers] == [200]
        assert answers[0].json()["hits"][0]["id"] in {"d1", "d4", "d5"}
    finally:
        searcher.gate.set()
        server.stop()


# ---------------------------------------------------------------------- schema fuzz
def test_schema_fuzz_finds_no_server_error(live):
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_url(live.url + "/openapi.json")
    seen: dict[int, int] = {}
    for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

        @settings(max_examples=40, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
        @given(case=schema.as_strategy(generation_mode=mode))
        def check(case):
            response = case.call(base_url=live.url, timeout=30)
            key = (case.path, response.status_code)
            seen[key] = seen.get(key, 0) + 1
            assert response.status_code < 500, f"{case.method} {case.path} {case.body!r} -> {response.status_code} {response.text[:300]}"
            if response.status_code >= 400:
                assert_problem(response)

        check()
    print("fuzz statuses", seen)
    assert any(s == 200 for _, s in seen) and any(400 <= s < 500 for _, s in seen), seen


def test_unsafe_retrievers_are_serialised_per_component(monkeypatch):
    """Retrievers whose spec is not thread_safe get one lock per component. Every built-in retriever is
    thread-safe now, so the specs are replaced by ones that say otherwise for all but bm25."""
    import dataclasses
    from types import SimpleNamespace

    from braid.retrieval import retrievers as registry
    from braid.retrieval.serve.app import serialize_unsafe_retrievers

    assert all(spec.thread_safe for spec in registry.RETRIEVERS.values())
    real_get = registry.get
    monkeypatch.setattr(registry, "get", lambda name: dataclasses.replace(real_get(name), thread_safe=name == "bm25"))

    class Fake:
        name = "fake"
        index = object()

        def __init__(self):
            self.lock_free_elsewhere = []

        def search(self, queries, k):
            # Another thread must not be able to take this component's lock while we run.
            probe = []
            t = threading.Thread(target=lambda: probe.append(self.lock.acquire(blocking=False)))
            t.start()
            t.join()
            if probe[0]:
                self.lock.release()
            self.lock_free_elsewhere.append(probe[0])
            return len(queries) * k

    retrievers = {"bm25": Fake(), "sparse": Fake(), "sparse-if": Fake(), "dense": Fake()}
    raw = dict(retrievers)
    searcher = SimpleNamespace(_retrievers=retrievers)
    assert serialize_unsafe_retrievers(searcher, list(raw)) == {"sparse": "sparse", "sparse-if": "sparse", "dense": "dense"}
    assert searcher._retrievers["bm25"] is raw["bm25"]
    wrapped = searcher._retrievers
    assert wrapped["sparse"]._lock is wrapped["sparse-if"]._lock and wrapped["sparse"]._lock is not wrapped["dense"]._lock
    for name in ("sparse", "sparse-if", "dense"):
        raw[name].lock = wrapped[name]._lock
        assert wrapped[name].search(["a", "b"], 3) == 6 and wrapped[name].name == "fake" and wrapped[name].index is raw[name].index
        assert raw[name].lock_free_elsewhere == [False]
    # Wrapping twice does not nest.
    serialize_unsafe_retrievers(searcher, list(raw))
    assert searcher._retrievers["dense"]._inner is raw["dense"]


@pytest.mark.slow
def test_hybrid_under_concurrent_requests_matches_the_library(tmp_path):
    """bm25 + sparse + dense with the real models: 24 concurrent requests over 4 threads give, for
    every retriever and the hybrid pipelines, exactly the hits of sequential library calls."""
    models = Path(os.environ.get("BRAID_MODEL_PATH", "/nonexistent"))
    if not (models / "splade-tiny").is_dir() or not (models / "all-MiniLM-L6-v2").is_dir():
        pytest.skip("shared models not found")
    root = tmp_path / "hy"
    root.mkdir()
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in DOCS), encoding="utf-8")
    options = BuildOptions(
        retrievers=("bm25", "sparse", "dense"),
        sparse_model=str(models / "splade-tiny"),
        dense_model=str(models / "all-MiniLM-L6-v2"),
        progress=False,
    )
    build_index(corpus, root / "index", options, log=lambda m: None)
    searcher = Searcher(root / "index")
    names = ["bm25", "sparse", "dense", "hybrid", "hybrid-rrf"]
    expected = {(n, q): _pairs(searcher.search(q, k=5, retriever=n)) for n in names for q in QUERIES[:4]}
    server = LiveServer(create_app(root / "index", searcher=searcher, max_concurrency=4, queue_size=64, timeout_s=120))
    try:
        info = httpx.get(server.url + "/info").json()
        assert set(names) <= set(info["retrievers"]) | set(info["pipelines"])
        assert info["serialized"] == {}  # the learned retrievers run concurrently (their specs are thread_safe)
        jobs = [(n, q) for n in names for q in QUERIES[:4]][:24]
        got: dict = {}

        def worker(part):
            with httpx.Client(base_url=server.url, timeout=120) as c:
                for n, q in part:
                    res = c.post("/search", json={"query": q, "k": 5, "retriever": n})
                    got[(n, q)] = (res.status_code, _pairs(res.json().get("hits", [])))

        threads = [threading.Thread(target=worker, args=(jobs[i::4],)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert len(got) == len(jobs)
        for key in jobs:
            status, pairs = got[key]
            assert status == 200 and _same(pairs, expected[key]), (key, got[key], expected[key])
    finally:
        server.stop()


# ---------------------------------------------------------------------- construction, CLI, imports
def test_service_config_validates():
    assert ServiceConfig.from_dict(ServiceConfig(queue_size=0).to_dict()) == ServiceConfig(queue_size=0)
    for bad in [dict(max_concurrency=0), dict(queue_size=-1), dict(timeout_s=float("nan")), dict(max_k=True), dict(timeout_s=0)]:
        with pytest.raises(OptionError) as err:
            ServiceConfig(**bad)
        assert next(iter(bad)) in str(err.value)
    with pytest.raises(OptionError):
        ServiceConfig.from_dict({"workers": 3})


def test_create_app_errors(tmp_path, index_dir):
    with pytest.raises(IndexFormatError):
        create_app(tmp_path / "missing")
    with pytest.raises(OptionError, match="default"):
        create_app(index_dir, default="dense")
    with pytest.raises(OptionError, match="no such file"):
        create_app(index_dir, pipelines=[tmp_path / "nope.toml"])
    bad = tmp_path / "needs-dense.toml"
    bad.write_text('[[retriever]]\nname = "dense"\n')
    with pytest.raises(OptionError, match="dense"):
        create_app(index_dir, pipelines=[bad])
    # A pipeline file given at start is served under its stem.
    extra = tmp_path / "extra.toml"
    extra.write_text(RRF_PIPELINE.replace("mine", "extra"))
    app = create_app(index_dir, pipelines=[extra], default="extra")
    assert app.state.catalog.default == "extra" and app.state.catalog.sources["extra"] == str(extra)


def test_cli_serve_errors(tmp_path):
    from braid.cli.serve import serve_cmd
    from click.testing import CliRunner

    res = CliRunner().invoke(serve_cmd, [str(tmp_path / "nope")])
    assert res.exit_code != 0 and "no such index directory" in res.output
    res = CliRunner().invoke(serve_cmd, [str(tmp_path), "--max-concurrency", "0"])
    assert res.exit_code == 2 and "max-concurrency" in res.output
    for bad in ("0", "two", "-1"):
        res = CliRunner().invoke(serve_cmd, [str(tmp_path), "--query-threads", bad])
        assert res.exit_code == 2 and "--query-threads" in res.output and "positive integer or 'auto'" in res.output


def test_query_threads_auto_shares_the_cores_between_concurrent_searches(monkeypatch):
    import os

    from braid.cli.serve import resolve_query_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert [resolve_query_threads("auto", c) for c in (1, 2, 4, 16, 32)] == [16, 8, 4, 1, 1]
    assert resolve_query_threads("3", 2) == 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_serve_runs_and_stops_on_sigterm(index_dir, library):
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "braid.cli.serve", str(index_dir), "--port", str(port), "--log-level", "info", "--pipeline", str(index_dir / "pipelines" / "mine.toml")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(proc.stdout.read().decode())
            try:
                return httpx.get(url + "/health", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        _wait(up, "the CLI server", limit=60)
        with BraidClient(url) as client:
            assert _same(_pairs(client.search("wolf", k=2)), _expected(library, "wolf", 2))
            assert client.info()["pipelines"]["mine"]["source"] == "--pipeline mine.toml"
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal so the exit status reports it.
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
        log = proc.stdout.read().decode()
        assert "Application shutdown complete" in log and "Traceback" not in log, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_importing_braid_does_not_import_the_web_stack():
    code = "import sys, braid, braid.retrieval.serve.app, braid.retrieval.serve.client; print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette', 'httpx', 'torch', 'faiss') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
