"""The search page's server side without a browser: the page's files (package data) at / and /static/, their
headers, the token exemption for them only, ``explain`` on POST /search, and ``braid search --explain``."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from braid.cli.main import main  # noqa: E402
from braid.retrieval.searcher import Searcher  # noqa: E402
from braid.retrieval.serve.app import PAGE_FILES, create_app  # noqa: E402
from braid.retrieval.serve.auth import AuthConfig  # noqa: E402
from tests.serve_support import RRF_PIPELINE, build_toy_index  # noqa: E402

TOKEN = "page-api-token-0123456789"


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    idx = build_toy_index(tmp_path_factory.mktemp("page-api"))
    (idx / "pipelines").mkdir()
    (idx / "pipelines" / "mine.toml").write_text(RRF_PIPELINE)
    return idx


@pytest.fixture(scope="module")
def client(index):
    with TestClient(create_app(index)) as c:
        yield c


def test_page_files_are_served_with_their_types_and_a_strict_policy(client):
    from importlib import resources

    folder = resources.files("braid.retrieval.serve") / "static"
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.content == (folder / "index.html").read_bytes()
    assert "default-src 'self'" in r.headers["content-security-policy"] and r.headers["x-content-type-options"] == "nosniff"
    html = r.text
    for name in PAGE_FILES:
        if name != "index.html":
            assert f'static/{name}' in html  # the page loads only its own files (no CDN)
            got = client.get(f"/static/{name}")
            assert got.status_code == 200 and got.content == (folder / name).read_bytes()
    assert client.get("/static/braid.js").headers["content-type"].startswith("text/javascript")
    assert all("://" not in (folder / n).read_text() for n in PAGE_FILES)  # no other origin: no CDN, no fonts
    assert client.get("/static/nope.js").status_code == 404
    assert client.get("/static/index.html").status_code == 404
    assert client.get("/static/..%2Fapp.py").status_code == 404
    assert "/" not in client.get("/openapi.json").json()["paths"]  # the page is not part of the API


def test_only_the_page_files_skip_the_token(index):
    with TestClient(create_app(index, auth=AuthConfig(token=TOKEN))) as c:
        assert c.get("/").status_code == 200 and c.get("/static/braid.css").status_code == 200
        assert c.get("/info").status_code == 401 and c.get("/static/nope.js").status_code == 401
        assert c.post("/search", json={"query": "cats", "explain": True}).status_code == 401
        ok = c.post("/search", json={"query": "cats", "explain": True}, headers={"authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and ok.json()["hits"][0]["explain"]


def test_search_explain_is_the_searchers_explanation(client, index):
    searcher = Searcher(index)
    for engine in ("bm25", "mine"):
        body = client.post("/search", json={"query": "cats purr", "k": 5, "retriever": engine, "explain": True, "fields": True}).json()
        want = searcher.explain("cats purr", k=5, retriever=engine if engine == "bm25" else index / "pipelines" / "mine.toml", fields=True)
        assert body["retriever"] == engine
        assert body["hits"] == want["hits"] and body["lists"] == want["lists"]
        for hit in body["hits"]:
            assert sum(p["contribution"] for p in hit["explain"]["retrievers"]) == pytest.approx(hit["explain"]["fused_score"])
    plain = client.post("/search", json={"query": "cats purr", "k": 5}).json()
    assert "lists" not in plain and "explain" not in plain["hits"][0]
    assert client.post("/search", json={"query": "cats", "explain": "yes"}).status_code == 422
    assert "explain" in client.get("/openapi.json").json()["components"]["schemas"]["SearchRequest"]["properties"]


def test_cli_search_explain(index):
    res = CliRunner().invoke(main, ["search", str(index), "cats purr", "-k", "3", "--explain"])
    assert res.exit_code == 0, res.output
    lines = [line for line in res.output.splitlines() if "bm25 #" in line]
    assert len(lines) == 3 and all("(100.0%)" in line for line in lines)
    res = CliRunner().invoke(main, ["search", str(index), "cats purr", "-k", "3", "--explain", "--json"])
    got = json.loads(res.stdout)
    want = Searcher(index).explain("cats purr", k=3, fields=True)
    assert got["hits"] == want["hits"] and got["lists"] == want["lists"]


def test_serve_open_opens_the_page_at_the_bound_port(monkeypatch):
    import threading
    import types
    import webbrowser

    from braid.cli.serve import open_when_started, page_url

    opened = threading.Event()
    urls = []
    monkeypatch.setattr(webbrowser, "open", lambda url: (urls.append(url), opened.set(), True)[-1])
    sock = types.SimpleNamespace(getsockname=lambda: ("127.0.0.1", 43210))
    fake = types.SimpleNamespace(started=True, should_exit=False, servers=[types.SimpleNamespace(sockets=[sock])])
    open_when_started(fake, "0.0.0.0", 0)
    assert opened.wait(10) and urls == ["http://127.0.0.1:43210/"]
    assert page_url("::", 8080) == "http://[::1]:8080/" and page_url("example.org", 80) == "http://example.org:80/"
    assert "--open" in CliRunner().invoke(main, ["serve", "--help"]).output
