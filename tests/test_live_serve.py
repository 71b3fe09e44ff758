"""``braid serve`` over a live index: POST/DELETE /documents behind the write token, and readers that
never see a half-applied commit while a writer commits (real uvicorn, real threads)."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from tests.serve_support import LiveServer, assert_problem, build_toy_index  # noqa: E402

from braid.retrieval.searcher import Searcher  # noqa: E402
from braid.retrieval.serve.app import create_app  # noqa: E402
from braid.retrieval.serve.auth import AuthConfig  # noqa: E402

READ = "r" * 20
WRITE = "w" * 20


def _client(server, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=60)


def test_writes_need_the_write_token_and_are_visible_to_the_next_search(tmp_path):
    index = build_toy_index(tmp_path)
    server = LiveServer(create_app(index, auth=AuthConfig(token=READ, write_token=WRITE), warm=False))
    try:
        doc = {"_id": "q9", "title": "Quokka", "text": "The quokka is a small marsupial that smiles.", "metadata": {"kind": "animal"}}
        with _client(server) as anon, _client(server, READ) as reader, _client(server, WRITE) as writer:
            assert_problem(anon.post("/documents", json={"documents": [doc]}), 401, "unauthorized")
            assert_problem(reader.post("/documents", json={"documents": [doc]}), 403, "forbidden")
            assert_problem(reader.request("DELETE", "/documents", json={"ids": ["d1"]}), 403, "forbidden")
            res = writer.post("/documents", json={"documents": [doc]})
            assert res.status_code == 200, res.text
            assert res.json()["added"] == 1 and res.json()["generation"] == 1
            hits = reader.post("/search", json={"query": "quokka", "retriever": "bm25", "filter": "kind = animal"}).json()
            assert [h["id"] for h in hits["hits"]] == ["q9"] and hits["generation"] == 1
            assert writer.post("/search", json={"query": "quokka", "retriever": "bm25"}).status_code == 200  # write grants read
            res = writer.request("DELETE", "/documents", json={"ids": ["q9", "nope"]})
            assert res.status_code == 200 and res.json()["deleted"] == 1 and res.json()["not_found"] == ["nope"]
            # delete-to-invisible: the very next search after the answer
            assert reader.post("/search", json={"query": "quokka", "retriever": "bm25"}).json()["hits"] == []
            bad = writer.post("/documents", json={"documents": [{"_id": "x", "text": 5}]})
            assert_problem(bad, 400, "bad_documents")
            assert "line 1" in bad.json()["detail"] and "'text'" in bad.json()["detail"]
            assert_problem(reader.post("/search", json={"query": "cats", "filter": "kind >="}), 422)
    finally:
        server.stop()


def test_a_server_without_a_write_token_takes_no_writes(tmp_path):
    index = build_toy_index(tmp_path)
    server = LiveServer(create_app(index, warm=False))
    try:
        with _client(server) as client:
            assert_problem(client.post("/documents", json={"documents": [{"_id": "z", "text": "z"}]}), 403, "writes_disabled")
            assert client.post("/search", json={"query": "cats"}).status_code == 200
    finally:
        server.stop()


def test_concurrent_readers_never_see_a_half_applied_commit(tmp_path):
    """Each commit adds the next pair of documents holding the word 'quokka' and updates the previous
    pair to a text without it (one add: two new ids, two upserts): a reader must always see exactly
    one pair, from one round, whatever moment its search lands on."""
    index = build_toy_index(tmp_path)
    searcher = Searcher(index)
    server = LiveServer(create_app(index, searcher=searcher, auth=AuthConfig(write_token=WRITE), max_concurrency=2, warm=False))
    rounds = 8
    seen: list[tuple[str, ...]] = []
    problems: list[str] = []
    stop = threading.Event()

    def pair(i):
        return [{"_id": f"a{i}", "title": "quokka", "text": f"quokka round {i}"}, {"_id": f"b{i}", "title": "quokka", "text": f"quokka round {i}"}]

    def read():
        with _client(server) as client:
            while not stop.is_set():
                res = client.post("/search", json={"query": "quokka", "retriever": "bm25", "k": 10})
                if res.status_code != 200:
                    problems.append(res.text)
                    continue
                ids = tuple(sorted(h["id"] for h in res.json()["hits"]))
                seen.append(ids)
                if len(ids) != 2 or ids[0][1:] != ids[1][1:]:
                    problems.append(f"half-applied: {ids}")

    try:
        with _client(server, WRITE) as writer:
            assert writer.post("/documents", json={"documents": pair(0)}).status_code == 200
            readers = [threading.Thread(target=read) for _ in range(3)]
            for t in readers:
                t.start()
            for i in range(1, rounds):
                docs = pair(i) + [{"_id": f"a{i - 1}", "text": "gone"}, {"_id": f"b{i - 1}", "text": "gone"}]
                res = writer.post("/documents", json={"documents": docs})
                assert res.status_code == 200, res.text
                assert (res.json()["added"], res.json()["updated"]) == (2, 2)
            stop.set()
            for t in readers:
                t.join(60)
    finally:
        stop.set()
        server.stop()
    assert not problems, problems[:5]
    assert len(seen) > rounds and len(set(seen)) > 1  # readers ran across several generations
