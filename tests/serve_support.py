"""What the service tests share: a toy index, uvicorn servers on loopback, a searcher that blocks
on demand, and the check of the one error shape."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import uvicorn
from braid.retrieval.build.builder import BuildOptions, build_index
from braid.retrieval.searcher import Searcher
from braid.retrieval.serve.app import create_app
from braid.retrieval.serve.errors import CODES
from braid.retrieval.serve.protocol import guarded_protocol

DOCS = [
    {"_id": "d1", "title": "Cats", "text": "Cats are small domesticated carnivorous mammals that purr."},
    {"_id": "d2", "title": "Dogs", "text": "Dogs are domesticated descendants of wolves and bark loudly."},
    {"_id": "d3", "title": "Wolves", "text": "The wolf is a large canine native to Eurasia and North America."},
    {"_id": "d4", "title": "Purring", "text": "Purring is a tonal buzzing sound made by cats and some other felids."},
    {"_id": "d5", "title": "Lions", "text": "The lion is a large cat of the genus Panthera, native to Africa."},
    {"_id": "d6", "title": "Barking", "text": "A bark is a sound most often produced by dogs."},
    {"_id": "d7", "title": "Crème brûlée", "text": "A dessert of rich custard topped with caramelised sugar. 猫"},
    {"_id": "d8", "title": "Foxes", "text": "Foxes are small omnivorous canines with a bushy tail."},
]
QUERIES = ["why do cats purr", "dogs bark", "wolf habitat", "small canine", "crème", "猫"]
RRF_PIPELINE = 'name = "mine"\ndepth = 100\n[[retriever]]\nname = "bm25"\n[fusion]\nmethod = "rrf"\nrrf_k = 60\n'


# ---------------------------------------------------------------------- servers
class LiveServer:
    """uvicorn serving ``app`` in a thread on 127.0.0.1 (ephemeral port)."""

    def __init__(self, app, http: str = "auto", header_timeout_s: float = 10.0, **uvicorn_options):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = app
        protocol = guarded_protocol(http, header_timeout_s=header_timeout_s)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=20, http=protocol, **uvicorn_options))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


class GatedSearcher(Searcher):
    """A Searcher whose searches of queries starting with ``"block"`` wait until ``gate`` is set,
    and whose search of ``"explode"`` fails as a bug would. ``calls`` counts batch_search calls."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)
        self.calls = 0

    def batch_search(self, queries, *args, **kwargs):
        self.calls += 1
        if "explode" in list(queries):
            raise RuntimeError("a bug in a retriever")
        if any(q.startswith("block") for q in queries):
            self.entered.release()
            self.gate.wait(60)
        return super().batch_search(queries, *args, **kwargs)


def build_toy_index(root: Path) -> Path:
    corpus = root / "corpus.jsonl"
    root.mkdir(parents=True, exist_ok=True)
    corpus.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in DOCS), encoding="utf-8")
    index = root / "index"
    build_index(corpus, index, BuildOptions(progress=False), log=lambda m: None)
    return index


def gated_server(index_dir, http: str = "auto", server: dict | None = None, **limits):
    """A GatedSearcher and a LiveServer over it; ``server``: LiveServer options, ``limits``: create_app's."""
    searcher = GatedSearcher(index_dir)
    return searcher, LiveServer(create_app(index_dir, searcher=searcher, **limits), http=http, **(server or {}))


def wait_for(predicate, what: str, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def assert_problem(res, status: int | None = None, code: str | None = None) -> dict:
    """``res`` is an error answer in the service's one shape (RFC 9457 problem details)."""
    if status is not None:
        assert res.status_code == status, res.text
    assert 400 <= res.status_code < 500 or res.status_code in (503, 504), res.text
    content_type = res.headers["content-type"]  # schemathesis gives lists of values
    assert (content_type[0] if isinstance(content_type, list) else content_type) == "application/problem+json", res.headers
    body = json.loads(res.text)
    assert set(body) <= {"type", "title", "status", "code", "detail", "errors"}, body
    assert body["type"] == "about:blank" and body["status"] == res.status_code and body["title"]
    assert isinstance(body["detail"], str) and body["detail"], body
    assert CODES[body["code"]][0] == res.status_code, body
    if code is not None:
        assert body["code"] == code, body
    return body


