"""``braid serve`` against hostile clients: header and body read timeouts, header, body, buffer and
response caps, the connection limit, deadlines that stop work, bearer tokens, ``/info`` without
server paths, ``HEAD /health``, and fuzzing with invalid Unicode, huge numbers and deep nesting.

Every refusal must be a 4xx (or 503/504) in the one error shape (``assert_problem``), never a 500.
References: hand-computed depths and byte counts, the library's Searcher for hits. Servers listen
on 127.0.0.1 only; every wait is bounded by a socket timeout or ``wait_for``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

fastapi = pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from braid.data.errors import OptionError  # noqa: E402
from braid.retrieval.searcher import Searcher  # noqa: E402
from braid.retrieval.serve.admission import Cancelled, Deadline  # noqa: E402
from braid.retrieval.serve.app import BATCH_GROUP, create_app  # noqa: E402
from braid.retrieval.serve.auth import AuthConfig, load_auth  # noqa: E402
from braid.retrieval.serve.client import BraidClient, ServiceError  # noqa: E402
from braid.retrieval.serve.errors import problem, scrub_paths  # noqa: E402
from braid.retrieval.serve.guard import MAX_JSON_DEPTH, SMALL_BODY_BYTES, Guard, json_depth  # noqa: E402
from braid.retrieval.serve.queries import is_blank_query  # noqa: E402

from tests.serve_support import (  # noqa: E402
    RRF_PIPELINE,
    LiveServer,
    assert_problem,
    build_toy_index,
    gated_server,
    wait_for,
)

TOKEN = "s3cret-token-for-tests-0123456789"
PROTOCOLS = ["h11", pytest.param("httptools", marks=pytest.mark.skipif(not __import__("importlib").util.find_spec("httptools"), reason="httptools not installed"))]


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory) -> Path:
    index = build_toy_index(tmp_path_factory.mktemp("limits"))
    (index / "pipelines").mkdir()
    (index / "pipelines" / "broken.toml").write_text("this is not toml [")
    return index


@pytest.fixture(scope="module")
def roomy(index_dir):
    """A server whose body limit lets deep and huge bodies reach the JSON checks."""
    server = LiveServer(create_app(index_dir, max_body_bytes=1 << 20, max_batch=64, max_k=50))
    yield server
    server.stop()


# ---------------------------------------------------------------------- raw HTTP over a socket
def _connect(server, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=timeout)


def _read_answer(sock: socket.socket) -> tuple[int, dict, bytes]:
    """Status, headers and body of one HTTP answer read off ``sock`` (bounded by its timeout)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before an answer: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def _raw_problem(status: int, headers: dict, body: bytes, want_status: int, want_code: str) -> dict:
    assert status == want_status, (status, body)
    assert headers["content-type"] == "application/problem+json"
    payload = json.loads(body)
    assert payload["status"] == want_status and payload["code"] == want_code and payload["detail"], payload
    return payload


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


# ---------------------------------------------------------------------- read timeouts
@pytest.mark.parametrize("http", PROTOCOLS)
def test_slow_headers_get_408_and_the_connection_closes(index_dir, http):
    server = LiveServer(create_app(index_dir), http=http, header_timeout_s=0.5, timeout_keep_alive=30)
    try:
        with _connect(server) as sock:
            t0 = time.monotonic()
            sock.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
            status, headers, body = _read_answer(sock)
            assert time.monotonic() - t0 >= 0.4
            _raw_problem(status, headers, body, 408, "request_timeout")
            assert _closed(sock)
        # A connection that sends nothing is closed without an answer.
        with _connect(server) as sock:
            assert _closed(sock)
        # The timer starts again after each answer of a keep-alive connection.
        with _connect(server) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_answer(sock)[0] == 200
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            _raw_problem(*_read_answer(sock), 408, "request_timeout")
    finally:
        server.stop()


@pytest.mark.parametrize("http", PROTOCOLS)
def test_slow_bodies_get_408_and_never_hold_a_search_slot(index_dir, http):
    # One search slot, no queue: a slow client holding it would turn every search into a 503.
    server = LiveServer(create_app(index_dir, max_concurrency=1, queue_size=0, body_timeout_s=1.5), http=http)
    slow = []
    try:
        t0 = time.monotonic()
        for _ in range(5):
            sock = _connect(server)
            sock.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"query\": \"ca")
            slow.append(sock)
        with httpx.Client(base_url=server.url, timeout=10) as c:
            for _ in range(3):
                res = c.post("/search", json={"query": "cats", "k": 2})
                assert res.status_code == 200, res.text
            assert c.get("/health").json()["in_flight"] == 0
        for sock in slow:
            payload = _raw_problem(*_read_answer(sock), 408, "request_timeout")
            assert "body_timeout_s" in payload["detail"]
            assert _closed(sock)
        assert time.monotonic() - t0 >= 1.4
    finally:
        for sock in slow:
            sock.close()
        server.stop()


@pytest.mark.parametrize("http", PROTOCOLS)
def test_oversized_headers_and_malformed_http_are_problems(index_dir, http):
    server = LiveServer(create_app(index_dir), http=http)
    try:
        with _connect(server) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000)
            status, headers, body = _read_answer(sock)
            # h11 refuses past its own 16 KiB event limit (400) before the 64 KiB header limit (431).
            _raw_problem(status, headers, body, status, "headers_too_large" if status == 431 else "bad_http")
            assert status in (400, 431)
        for garbage in (b"GARBAGE\r\n\r\n", b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}", b"GET / HTTP/9.9\x00\r\n\r\n"):
            with _connect(server) as sock:
                sock.sendall(garbage)
                status, headers, body = _read_answer(sock)
                assert 400 <= status < 500, (garbage, status, body)
                assert headers["content-type"] == "application/problem+json" and json.loads(body)["status"] == status
    finally:
        server.stop()


@pytest.mark.parametrize("http", PROTOCOLS)
def test_the_connection_limit_answers_503_in_the_error_shape(index_dir, http):
    server = LiveServer(create_app(index_dir), http=http, limit_concurrency=3)
    idle = []
    try:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            assert c.get("/health").status_code == 200
        idle = [_connect(server) for _ in range(3)]
        wait_for(lambda: len(server.server.server_state.connections) >= 3, "three open connections")
        with httpx.Client(base_url=server.url, timeout=10) as c:
            res = c.get("/health")
            assert_problem(res, 503, "too_many_connections")
            for sock in idle:
                sock.close()
            wait_for(lambda: len(server.server.server_state.connections) == 0, "the idle connections to close")
            assert c.get("/health").status_code == 200
    finally:
        for sock in idle:
            sock.close()
        server.stop()


def test_bytes_being_read_are_capped_and_released(index_dir):
    # Two large bodies (120 kB each, past SMALL_BODY_BYTES) fill most of a 300 kB budget; a third
    # is refused, a small request is not, and the budget is whole again once they are done.
    assert SMALL_BODY_BYTES < 120_000
    server = LiveServer(create_app(index_dir, max_body_bytes=200_000, max_buffered_bytes=300_000, body_timeout_s=30))
    head = b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 150000\r\n\r\n"
    socks = []
    try:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            for round_ in range(2):
                socks = [_connect(server) for _ in range(3)]
                for sock in socks[:2]:
                    sock.sendall(head + b" " * 120_000)
                wait_for(lambda: _buffered(server) >= 240_000, "the two bodies to be buffered")
                socks[2].sendall(head + b" " * 120_000)
                _raw_problem(*_read_answer(socks[2]), 503, "busy_reading")
                assert c.post("/search", json={"query": "cats"}).status_code == 200
                # The first two finish their bodies: answered (422: not JSON), not refused.
                for sock in socks[:2]:
                    sock.sendall(b" " * 30_000)
                    status, headers, body = _read_answer(sock)
                    assert status == 422, (round_, body)
                for sock in socks:
                    sock.close()
                wait_for(lambda: _buffered(server) == 0, "the budget to be released")
    finally:
        for sock in socks:
            sock.close()
        server.stop()


def _buffered(server) -> int:
    """Bytes the server's Guard middleware holds (the middleware stack is built on the first request)."""
    layer = server.app.middleware_stack
    while not isinstance(layer, Guard):
        layer = layer.app
    return layer.buffered


# ---------------------------------------------------------------------- work and answer caps
def test_answers_over_max_response_bytes_are_refused(index_dir):
    library = Searcher(index_dir)
    server = LiveServer(create_app(index_dir, max_response_bytes=600, max_batch=64, max_k=50))
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            res = c.post("/batch_search", json={"queries": ["cats purr"] * 64, "k": 50})
            payload = assert_problem(res, 422, "response_too_large")
            assert "max_response_bytes = 600" in payload["detail"] and "of 64 queries" in payload["detail"]
            res = c.post("/search", json={"query": "cats dogs wolf lion fox", "k": 8, "fields": True})
            assert_problem(res, 422, "response_too_large")
            # Below the cap the answer is whole and the library's.
            res = c.post("/batch_search", json={"queries": ["cats", "wolf"], "k": 3})
            assert res.status_code == 200 and len(res.content) <= 600
            assert [h["id"] for h in res.json()["results"][1]["hits"]] == [h["id"] for h in library.search("wolf", k=3)]
    finally:
        server.stop()


def test_a_batch_past_its_deadline_stops_between_groups(index_dir):
    searcher, server = gated_server(index_dir, max_concurrency=1, queue_size=1, timeout_s=0.3, max_batch=4 * BATCH_GROUP)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            before = searcher.calls  # the warm-up searches at start count too
            queries = ["block cats"] + ["cats"] * (4 * BATCH_GROUP - 1)
            res = c.post("/batch_search", json={"queries": queries, "k": 2})
            assert "stopped" in assert_problem(res, 504, "timeout")["detail"]
            assert searcher.calls == before + 1
            searcher.gate.set()
            wait_for(lambda: c.get("/health").json()["in_flight"] == 0, "the stopped batch to free its slot")
            health = c.get("/health").json()
            # Only the first of four groups ran: the deadline stopped the batch before the second.
            assert searcher.calls == before + 1 and health["stopped"] == 1 and health["timed_out"] == 1
            # The server is whole: the same batch, unblocked, runs every group.
            res = c.post("/batch_search", json={"queries": ["cats"] * (4 * BATCH_GROUP), "k": 2})
            assert res.status_code == 200 and len(res.json()["results"]) == 4 * BATCH_GROUP
            assert searcher.calls == before + 1 + 4
    finally:
        searcher.gate.set()
        server.stop()


def test_deadline():
    d = Deadline(60)
    d.check()
    d.cancel()
    with pytest.raises(Cancelled):
        d.check()
    expired = Deadline(0.001)
    time.sleep(0.01)
    assert expired.expired()
    with pytest.raises(Cancelled):
        expired.check()


# ---------------------------------------------------------------------- authentication
AUTH_ENDPOINTS = [("GET", "/health"), ("HEAD", "/health"), ("GET", "/info"), ("GET", "/openapi.json"), ("GET", "/docs"), ("POST", "/search"), ("POST", "/batch_search"), ("GET", "/nope")]


@pytest.fixture(scope="module")
def guarded(index_dir):
    server = LiveServer(create_app(index_dir, auth=AuthConfig(token=TOKEN), max_body_bytes=4096))
    yield server
    server.stop()


@pytest.mark.parametrize("method,path", AUTH_ENDPOINTS)
def test_every_endpoint_needs_the_token(guarded, method, path):
    body = {"query": "cats"} if path == "/search" else {"queries": ["cats"]} if path == "/batch_search" else None
    with httpx.Client(base_url=guarded.url, timeout=10) as c:
        for headers, status, code in [
            ({}, 401, "unauthorized"),
            ({"Authorization": "Basic dXNlcjpwYXNz"}, 401, "unauthorized"),
            ({"Authorization": "Bearer"}, 401, "unauthorized"),
            ({"Authorization": "Bearer " + TOKEN[:-1]}, 403, "forbidden"),
            ({"Authorization": "Bearer " + TOKEN + "x"}, 403, "forbidden"),
        ]:
            res = c.request(method, path, json=body, headers=headers)
            assert res.status_code == status, (headers, res.status_code)
            assert res.headers["www-authenticate"].startswith("Bearer")
            if method != "HEAD":
                assert_problem(res, status, code)
        for scheme in ("Bearer", "bearer"):
            res = c.request(method, path, json=body, headers={"Authorization": f"{scheme} {TOKEN}"})
            assert res.status_code == (404 if path == "/nope" else 200), res.text


def test_an_unauthenticated_body_is_not_read(guarded):
    with httpx.Client(base_url=guarded.url, timeout=10) as c:
        assert_problem(c.post("/search", json={"query": "cats " * 5000}), 401, "unauthorized")
        res = c.post("/search", json={"query": "cats " * 5000}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert_problem(res, 413, "body_too_large")


def test_client_sends_the_token(guarded):
    with BraidClient(guarded.url, token=TOKEN) as client:
        assert client.search("cats", k=1)[0]["id"] in {"d1", "d4", "d5"}
        assert client.info()["auth"] == "bearer"
    with BraidClient(guarded.url) as client, pytest.raises(ServiceError) as err:
        client.health()
    assert err.value.status == 401 and err.value.code == "unauthorized"


def test_auth_config_and_token_sources(tmp_path):
    assert not AuthConfig().enabled and AuthConfig().check("read", None) is None
    auth = AuthConfig(token=TOKEN)
    assert TOKEN not in repr(auth) and auth.check("read", b"Bearer " + TOKEN.encode()) is None
    assert auth.check("read", b"  Bearer   " + TOKEN.encode() + b"  ") is None
    assert auth.check("read", b"Bearer \xff\xfe")[0] == 403
    with pytest.raises(ValueError):
        auth.accepted("admin")  # not a scope
    assert auth.accepted("write") == () and auth.check("write", b"Bearer " + TOKEN.encode())[1] == "writes_disabled"  # no write token: writes off
    assert auth.check("write", None)[0] == 401
    for bad in ["short", "has space in it 0123456789", "tab\tin-it-0123456789", "ünïcode-0123456789ab", ""]:
        with pytest.raises(OptionError) as err:
            AuthConfig(token=bad)
        assert bad not in str(err.value) or not bad
    good = tmp_path / "token"
    good.write_text(f"\n  {TOKEN}  \n")
    assert load_auth(token_file=good).token == TOKEN and load_auth(token=TOKEN).token == TOKEN and not load_auth().enabled
    two = tmp_path / "two"
    two.write_text(f"{TOKEN}\n{TOKEN}\n")
    for kwargs, words in [(dict(token=TOKEN, token_file=good), "one of them"), (dict(token_file=two), "one line"), (dict(token_file=tmp_path / "missing"), "readable")]:
        with pytest.raises(OptionError, match=words):
            load_auth(**kwargs)


def test_cli_token_options_are_checked_before_the_index_opens(tmp_path):
    from braid.cli.serve import serve_cmd
    from click.testing import CliRunner

    res = CliRunner().invoke(serve_cmd, [str(tmp_path / "nope"), "--token", "short"])
    assert res.exit_code != 0 and "at least 16" in res.output and "short" not in res.output.replace("--token", "")
    res = CliRunner().invoke(serve_cmd, [str(tmp_path / "nope")], env={"BRAID_TOKEN": "bad token with spaces"})
    assert res.exit_code != 0 and "--token" in res.output
    (tmp_path / "t").write_text(TOKEN)
    res = CliRunner().invoke(serve_cmd, [str(tmp_path / "nope"), "--token-file", str(tmp_path / "t")], env={"BRAID_TOKEN": TOKEN})
    assert res.exit_code != 0 and "one of them" in res.output


def test_cli_serves_with_a_token_file(index_dir, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("BRAID_TOKEN", None)
    cmd = [sys.executable, "-m", "braid.cli.serve", str(index_dir), "--port", str(port), "--token-file", str(token_file), "--header-timeout", "5", "--body-timeout", "5", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(proc.stdout.read().decode())
            try:
                return httpx.get(url + "/health", timeout=2).status_code == 401
            except httpx.TransportError:
                return False

        wait_for(up, "the CLI server", limit=60)
        assert httpx.get(url + "/health", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).status_code == 200
        with BraidClient(url, token=TOKEN) as client:
            assert client.info()["limits"]["body_timeout_s"] == 5.0
    finally:
        proc.terminate()
        proc.wait(30)


# ---------------------------------------------------------------------- /info and HEAD /health
def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def test_info_carries_no_server_path(index_dir, tmp_path):
    extra = tmp_path / "extra.toml"
    extra.write_text(RRF_PIPELINE.replace("mine", "extra"))
    server = LiveServer(create_app(index_dir, pipelines=[extra]))
    try:
        res = httpx.get(server.url + "/info", timeout=10)
        info = res.json()
        assert str(index_dir.parent) not in res.text and str(tmp_path) not in res.text and "/tmp/" not in res.text
        assert not [s for s in _strings(info) if s.startswith("/") or s.startswith("~/")]
        assert info["index"] == "index" and info["pipelines"]["extra"]["source"] == "--pipeline extra.toml"
        assert "broken" in info["unavailable"] and "not valid TOML" in info["unavailable"]["broken"]
        assert info["auth"] is None and "token" not in json.dumps(info["limits"])
    finally:
        server.stop()


def test_head_health(roomy):
    res = httpx.head(roomy.url + "/health", timeout=10)
    assert res.status_code == 200 and res.content == b"" and res.headers["x-braid-status"] == "ok"
    assert httpx.head(roomy.url + "/search", timeout=10).status_code == 405


# ---------------------------------------------------------------------- blank queries
def test_blank_query_rule():
    for text in ["", " ", "\t\n\r", "\x00", "\x00\x00\x00", "\u200b", "\ufeff\u00ad", "\u3000\u2028", "\u0301\u20dd", "\ufffd", "\x1f\x7f"]:
        assert is_blank_query(text), repr(text)
    for text in ["a", " a ", "\x00a", "🙂", "猫", "the", "1", "e\u0301", "-", "\ue000"]:
        assert not is_blank_query(text), repr(text)


def test_blank_queries_are_refused_in_batches_too(roomy):
    res = httpx.post(roomy.url + "/batch_search", json={"queries": ["cats", " \x00 ", {"id": "x", "query": "\u200b"}]}, timeout=10)
    payload = assert_problem(res, 422, "invalid_request")
    assert "queries.1" in payload["detail"] and "visible character" in payload["detail"]


# ---------------------------------------------------------------------- errors and JSON checks, by hand
def test_json_depth_by_hand():
    cases = {
        b"": 0, b"1": 0, b'"[[["': 0, b"[]": 1, b"{}": 1, b"[[]]": 2, b'[{"a": [1, {"b": []}]}]': 5,
        b'["\\"[", []]': 2, b'["\\\\", [[]]]': 3, b'["\\\\\\"[[", []]': 2, b"[[[": 3, b"]]][": 0, b"[]]][[[": 1,
        b"[" * 100_000 + b"]" * 100_000: 100_000,
    }
    for body, depth in cases.items():
        assert json_depth(body) == depth, body[:40]


def test_problem_and_path_scrubbing():
    assert scrub_paths("no such file: /work/shared/models/splade-tiny (x)") == "no such file: splade-tiny (x)"
    assert scrub_paths("POST /search; text/plain; org/model; C:\\Users\\me\\idx; ~/a/b.toml") == "POST /search; text/plain; org/model; idx; b.toml"
    p = problem(422, "invalid_request", "bad \ud800 at /tmp/x/y", [{"loc": ["body", "\udc00"], "msg": "m", "type": "t"}])
    json.dumps(p, ensure_ascii=False).encode("utf-8")  # encodable
    assert p["detail"] == "bad \ufffd at y" and p["errors"][0]["loc"][1] == "\ufffd" and p["title"]
    with pytest.raises(ValueError):
        problem(400, "no-such-code", "x")


# ---------------------------------------------------------------------- fuzz: invalid Unicode, huge numbers, deep nesting
DEEP = MAX_JSON_DEPTH + 1
HOSTILE_BODIES = [
    # lone surrogates as JSON escapes, in every place a string goes
    b'{"query": "\\ud800"}',
    b'{"query": "cats\\udfff"}',
    b'{"query": "\\udc00\\ud800"}',
    b'{"query": "cats", "\\ud800": 1}',
    b'{"queries": [{"id": "\\ud800", "query": "cats"}]}',
    b'{"queries": ["\\ud83d"]}',
    b'{"query": "cats", "retriever": "\\ud800"}',
    # invalid UTF-8: a stray byte, an overlong slash, an encoded surrogate, a truncated sequence, Latin-1
    b'{"query": "\xff"}',
    b'{"query": "\xc0\xaf"}',
    b'{"query": "\xed\xa0\x80"}',
    b'{"query": "caf\xc3"}',
    b'{"query": "caf\xe9"}',
    b'{"\xfe": 1}',
    b"\x00\x00\x00{",
    # huge and odd numbers
    b'{"query": "cats", "k": 1e400}',
    b'{"query": "cats", "k": -1e400}',
    b'{"query": "cats", "k": 1e-400}',
    b'{"query": "cats", "k": 1208925819614629174706176}',
    b'{"query": "cats", "k": ' + b"9" * 5000 + b"}",
    b'{"query": "cats", "k": -' + b"9" * 5000 + b"}",
    b'{"query": "cats", "k": 1.' + b"0" * 5000 + b"}",
    b'{"query": "cats", "heap_factor": 1e400}',
    b'{"query": "cats", "nprobe": 1208925819614629174706176}',
    b'{"query": "cats", "k": 10.0}',
    b'{"query": "cats", "k": -0}',
    # deep nesting: arrays, objects, mixed, unclosed, inside a field, and at the limit + 1
    b"[" * 200_000 + b"]" * 200_000,
    b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    b"[{" * 50_000,
    b'{"query": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"query": "cats", "k": ' + b"[" * DEEP + b"]" * DEEP + b"}",
    b'{"queries": [' + b"[" * DEEP + b"]" * DEEP + b"]}",
]


@pytest.mark.parametrize("path", ["/search", "/batch_search"])
@pytest.mark.parametrize("raw", HOSTILE_BODIES, ids=lambda b: b[:30].decode("latin-1").encode("unicode_escape").decode() + f"..{len(b)}")
def test_hostile_bodies_get_a_clear_4xx(roomy, path, raw):
    res = httpx.post(roomy.url + path, content=raw, headers={"content-type": "application/json"}, timeout=30)
    payload = assert_problem(res)
    assert res.status_code in (400, 413, 422), payload
    if raw.count(b"[") + raw.count(b"{") > DEEP and json_depth(raw) > MAX_JSON_DEPTH:
        assert payload["code"] == "json_too_deep" and "limit is 32" in payload["detail"]
    if b"9" * 5000 in raw:
        assert "digits" in payload["detail"]


def test_nesting_at_the_limit_is_parsed(roomy):
    depth = MAX_JSON_DEPTH - 1  # inside the outer object
    body = b'{"query": "cats", "k": ' + b"[" * depth + b"]" * depth + b"}"
    payload = assert_problem(httpx.post(roomy.url + "/search", content=body, headers={"content-type": "application/json"}, timeout=10), 422)
    assert payload["code"] == "invalid_request" and payload["detail"].startswith("k:")


def test_random_json_and_bytes_never_get_a_server_error(roomy):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    text = st.text(st.characters(codec=None, categories=None), max_size=20)  # surrogates included
    scalars = st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10**40), max_value=10**40) | st.floats() | text
    values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4), max_leaves=20)
    keys = st.sampled_from(["query", "queries", "k", "retriever", "pipeline", "fields", "heap_factor", "query_cut", "nprobe", "ef_search", "id"])
    requests = st.dictionaries(keys | text, values, max_size=6)
    bodies = requests.map(lambda d: json.dumps(d, ensure_ascii=True, allow_nan=True).encode()) | st.binary(max_size=200)
    seen: dict[int, int] = {}
    with httpx.Client(base_url=roomy.url, timeout=30) as c:

        @settings(max_examples=150, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
        @given(body=bodies, path=st.sampled_from(["/search", "/batch_search"]))
        def check(body, path):
            res = c.post(path, content=body, headers={"content-type": "application/json"})
            seen[res.status_code] = seen.get(res.status_code, 0) + 1
            assert res.status_code < 500, (path, body[:200], res.text[:300])
            if res.status_code >= 400:
                assert_problem(res)

        check()
    assert any(400 <= s < 500 for s in seen), seen


def test_docs_do_not_leak_the_index_path(roomy, index_dir):
    spec = httpx.get(roomy.url + "/openapi.json", timeout=10).text
    assert str(index_dir) not in spec and "application/problem+json" in spec
    assert json.loads(spec)["components"]["schemas"]["Problem"]["required"] == ["title", "status", "code", "detail"]


def test_schema_fuzz_behind_a_token(guarded):
    """The schemathesis run of test_service.py, against a server that requires a token: with it,
    no 5xx and every error in the one shape; without it, 401 on every operation."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings

    auth = {"Authorization": f"Bearer {TOKEN}"}
    spec = httpx.get(guarded.url + "/openapi.json", headers=auth, timeout=10).json()
    schema = schemathesis.openapi.from_dict(spec)
    seen: dict[tuple[str, int], int] = {}
    for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

        @settings(max_examples=30, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
        @given(case=schema.as_strategy(generation_mode=mode))
        def check(case):
            response = case.call(base_url=guarded.url, headers=auth, timeout=30)
            seen[(case.path, response.status_code)] = seen.get((case.path, response.status_code), 0) + 1
            assert response.status_code < 500, f"{case.method} {case.path} {case.body!r} -> {response.status_code} {response.text[:300]}"
            if response.status_code >= 400 and case.method != "HEAD":
                assert_problem(response)
            bare = case.call(base_url=guarded.url, timeout=30)
            assert bare.status_code == 401, (case.method, case.path, bare.status_code)

        check()
    assert any(s == 200 for _, s in seen) and any(400 <= s < 500 for _, s in seen), seen
