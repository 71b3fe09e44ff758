"""``braid mcp``: the MCP SDK's own client against the server, in-process, over stdio, and over streamable HTTP
with a bearer token; the top 10 equal ``braid search``'s on a small BM25 index (adi from ../shared, else the
toy collection)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner

pytest.importorskip("mcp")
from mcp import Client  # noqa: E402
from mcp.client.stdio import StdioServerParameters  # noqa: E402

from braid.cli.main import main  # noqa: E402
from braid.retrieval.serve.mcp_server import McpLimits, create_mcp_server  # noqa: E402
from tests.conftest import REPO, SHARED  # noqa: E402

TOKEN = "mcp-test-token-0123456789"


@pytest.fixture(scope="module")
def small_index(tmp_path_factory, request) -> tuple[Path, list[str]]:
    from braid.data.beir import BeirDataset
    from braid.retrieval.build.builder import BuildOptions, build_index

    adi = SHARED / "data" / "adi"
    if adi.is_dir():
        data = adi
    else:
        data = request.getfixturevalue("toy_dataset")
    out = tmp_path_factory.mktemp("mcp") / "index"
    build_index(data, out, BuildOptions(retrievers=("bm25",), progress=False))
    queries = list(BeirDataset(data).queries("test").values())[:5]
    return out, queries


def cli_top(index: Path, query: str, k: int = 10) -> list[str]:
    res = CliRunner().invoke(main, ["search", str(index), query, "-k", str(k), "-r", "bm25", "--json"])
    assert res.exit_code == 0, res.output
    return [h["id"] for h in json.loads(res.stdout)["hits"]]


def payload(result) -> dict:
    assert not result.is_error, result.content
    return result.structured_content


def test_tools_schemas_search_document_and_errors_in_process(small_index):
    index, queries = small_index
    server = create_mcp_server(index, limits=McpLimits(max_k=50, max_document_chars=300))

    async def session():
        async with Client(server) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert set(tools) == {"search", "get_document", "describe_index"}
            schema = tools["search"].input_schema
            assert schema["required"] == ["query"]
            assert schema["properties"]["k"]["maximum"] == 50 and schema["properties"]["k"]["minimum"] == 1
            assert "bm25" in json.dumps(schema["properties"]["retriever"])
            assert tools["get_document"].input_schema["required"] == ["id"]
            for query in queries:
                got = payload(await client.call_tool("search", {"query": query, "k": 10, "retriever": "bm25"}))
                assert [h["id"] for h in got["hits"]] == cli_top(index, query)
                assert all(len(h["text"]) <= 402 for h in got["hits"])
            first = got["hits"][0]
            doc = payload(await client.call_tool("get_document", {"id": first["id"], "max_chars": 300}))
            assert doc["id"] == first["id"] and doc["title"] == first["title"] and len(doc["text"]) <= 302
            assert doc["text_truncated"] == (doc["chars"] > 300)
            info = payload(await client.call_tool("describe_index", {}))
            assert info["retrievers"] == ["bm25"] and info["num_docs"] > 0 and info["index"] == "index"
            assert str(index.parent) not in json.dumps(info)  # no server paths
            # errors are tool errors with a message, and the server keeps answering
            for args, needle in (
                ({"query": "x", "k": 0}, "k"),
                ({"query": "x", "k": 51}, "k"),
                ({"query": "x", "retriever": "nope"}, "retriever"),
                ({"query": ""}, "query"),
            ):
                bad = await client.call_tool("search", args)
                assert bad.is_error and needle in bad.content[0].text, (args, bad.content)
            missing = await client.call_tool("get_document", {"id": "no-such-doc"})
            assert missing.is_error and "no such document" in missing.content[0].text
            again = payload(await client.call_tool("search", {"query": queries[0], "k": 3, "retriever": "bm25"}))
            assert [h["id"] for h in again["hits"]] == cli_top(index, queries[0], 3)

    anyio.run(session)


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO.parent), "HF_HUB_OFFLINE": "1"}


def test_stdio_transport_gives_the_cli_top_10(small_index):
    index, queries = small_index
    params = StdioServerParameters(command=sys.executable, args=["-m", "braid.cli.main", "mcp", str(index), "--no-warm"], env=env())

    async def session():
        async with Client(params) as client:
            assert {t.name for t in (await client.list_tools()).tools} == {"search", "get_document", "describe_index"}
            got = payload(await client.call_tool("search", {"query": queries[1], "k": 10, "retriever": "bm25"}))
            assert [h["id"] for h in got["hits"]] == cli_top(index, queries[1])

    anyio.run(session)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_streamable_http_requires_the_token(small_index):
    import httpx
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    index, queries = small_index
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "braid.cli.main", "mcp", str(index), "--transport", "http", "--port", str(port), "--no-warm"],
        env={**env(), "BRAID_TOKEN": TOKEN}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.post(url, json={}, timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode() if proc.poll() is not None else "no server"
                time.sleep(0.2)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert httpx.post(url, json={}, headers={"authorization": "Bearer wrong-token-0123456789"}).status_code == 403

        async def session():
            async with httpx2.AsyncClient(headers={"authorization": f"Bearer {TOKEN}"}) as http:
                async with Client(streamable_http_client(url, http_client=http)) as client:
                    got = payload(await client.call_tool("search", {"query": queries[2], "k": 10}))
                    assert [h["id"] for h in got["hits"]] == cli_top(index, queries[2])

        anyio.run(session)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_stdio_refuses_a_token(small_index):
    index, _ = small_index
    res = CliRunner().invoke(main, ["mcp", str(index), "--token", TOKEN])
    assert res.exit_code != 0 and "--transport http" in res.output


def test_search_tool_filters_by_metadata(tmp_path):
    """The search tool's filter is applied before the top k (the hits are the filtered top k of braid search
    --filter); describe_index lists the fields; a malformed filter is a tool error."""
    from braid.retrieval.build.builder import BuildOptions, build_index
    from tests.conftest import write_jsonl

    docs = [{"_id": f"d{i}", "title": f"cats {i}", "text": "cats purr " * (1 + i % 4), "metadata": {"year": 2000 + i, "lang": "en" if i % 3 else "de"}} for i in range(15)]
    write_jsonl(tmp_path / "data" / "corpus.jsonl", docs)
    index = tmp_path / "index"
    build_index(tmp_path / "data", index, BuildOptions(retrievers=("bm25",), progress=False), log=lambda m: None)
    server = create_mcp_server(index)
    res = CliRunner().invoke(main, ["search", str(index), "cats", "-k", "5", "-r", "bm25", "--filter", "year >= 2004 and lang = en", "--json"])
    assert res.exit_code == 0, res.output
    want = [h["id"] for h in json.loads(res.stdout)["hits"]]
    matching = {d["_id"] for d in docs if d["metadata"]["year"] >= 2004 and d["metadata"]["lang"] == "en"}
    assert len(want) == 5 and set(want) <= matching

    async def session():
        async with Client(server) as client:
            got = payload(await client.call_tool("search", {"query": "cats", "k": 5, "retriever": "bm25", "filter": "year >= 2004 and lang = en"}))
            assert [h["id"] for h in got["hits"]] == want
            info = payload(await client.call_tool("describe_index", {}))
            assert info["filters"]["fields"] == {"lang": "keyword", "year": "number"}
            none = payload(await client.call_tool("search", {"query": "cats", "retriever": "bm25", "filter": "colour = red"}))
            assert none["hits"] == []  # a field no document has matches none
            bad = await client.call_tool("search", {"query": "cats", "filter": "year >= "})
            assert bad.is_error and "filter" in bad.content[0].text

    anyio.run(session)
