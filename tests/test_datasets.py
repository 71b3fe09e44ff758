"""Collections by name (braid.data.datasets): BEIR zips from a loopback HTTP server, ir_datasets exports.

The BEIR server is ``http.server`` on 127.0.0.1 in a thread, serving a zip built here; no test reaches
the network. Each test has its own cache (``tmp_path``) and server.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from braid.data import datasets
from braid.data.beir import BeirDataset
from braid.data.datasets import DatasetError, export_irds, fetch_beir, irds_location, resolve_dataset
from tests.conftest import TOY_DOCS, TOY_QRELS, TOY_QUERIES


def toy_zip(name: str = "toy", sub: str | None = None) -> bytes:
    """A BEIR-style zip: ``NAME/corpus.jsonl``, ``NAME/queries.jsonl``, ``NAME/qrels/test.tsv``
    (under ``NAME/SUB/`` when ``sub`` is given, as cqadupstack is laid out)."""
    prefix = f"{name}/{sub}/" if sub else f"{name}/"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(prefix + "corpus.jsonl", "".join(json.dumps(d) + "\n" for d in TOY_DOCS))
        zf.writestr(prefix + "queries.jsonl", "".join(json.dumps(q) + "\n" for q in TOY_QUERIES))
        zf.writestr(prefix + "qrels/test.tsv", TOY_QRELS)
    return buf.getvalue()


class Server:
    """Serves ``files`` ({url path: bytes}) on loopback; ``truncate`` sends the full Content-Length
    but only the first half of the body, then closes the connection."""

    def __init__(self, files: dict[str, bytes], truncate: bool = False):
        self.files = files
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if truncate else body)
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/beir"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def beir_server(monkeypatch):
    """``start(files, truncate=False)`` -> a running Server with BRAID_BEIR_URL pointing at it."""
    servers = []

    def start(files, truncate=False):
        server = Server(files, truncate).__enter__()
        servers.append(server)
        monkeypatch.setenv("BRAID_BEIR_URL", server.base)
        return server

    yield start
    for server in servers:
        server.__exit__()


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "beir").iterdir()) if (cache / "beir").is_dir() else []


def test_beir_download_verify_unpack_and_reuse_offline(beir_server, tmp_path, monkeypatch):
    body = toy_zip()
    monkeypatch.setitem(datasets.BEIR_MD5, "toy", hashlib.md5(body).hexdigest())
    server = beir_server({"/beir/toy.zip": body})
    cache = tmp_path / "cache"
    folder = resolve_dataset("beir/toy", cache=cache, progress=False)
    assert folder == cache / "beir" / "toy"
    ds = BeirDataset(folder)
    assert ds.name == "toy" and set(ds.queries("test")) == {"q1", "q2", "q3"}
    record = json.loads((folder / "braid-source.json").read_text())
    assert record["md5"] == record["md5_published"] == hashlib.md5(body).hexdigest()
    assert record["sha256"] == hashlib.sha256(body).hexdigest()
    assert record["bytes"] == len(body) and record["url"] == server.base + "/toy.zip"
    assert leftovers(cache) == ["toy"]  # no partial folder, no zip left behind
    server.__exit__()  # offline from here on: the cached copy is used without a request
    assert resolve_dataset("beir/toy", cache=cache) == folder
    assert server.requests == ["/beir/toy.zip"]


def test_beir_subfolder_and_unknown_checksum_is_said_and_recorded(beir_server, tmp_path):
    body = toy_zip("bundle", sub="part")
    beir_server({"/beir/bundle.zip": body})
    notes = []
    folder = fetch_beir("bundle/part", cache=tmp_path, progress=False, log=notes.append)
    assert folder == tmp_path / "beir" / "bundle" / "part" and BeirDataset(folder).qrels("test")
    assert len(notes) == 1 and "no published checksum" in notes[0] and hashlib.sha256(body).hexdigest() in notes[0]
    record = json.loads((tmp_path / "beir" / "bundle" / "braid-source.json").read_text())
    assert record["md5_published"] is None and record["sha256"] == hashlib.sha256(body).hexdigest()
    assert record["checksum"].startswith("unverified")
    with pytest.raises(DatasetError, match=r"beir/bundle/other: no other in the BEIR archive bundle \(it has: part\)"):
        fetch_beir("bundle/other", cache=tmp_path)


def test_beir_checksum_mismatch_keeps_nothing(beir_server, tmp_path, monkeypatch):
    monkeypatch.setitem(datasets.BEIR_MD5, "toy", "0" * 32)
    beir_server({"/beir/toy.zip": toy_zip()})
    with pytest.raises(DatasetError, match=r"^dataset beir/toy: checksum mismatch for http://127\.0\.0\.1:\d+/beir/toy\.zip: md5 [0-9a-f]{32}, BEIR publishes 0{32}"):
        resolve_dataset("beir/toy", cache=tmp_path, progress=False)
    assert leftovers(tmp_path) == []


def test_beir_truncated_download_keeps_nothing(beir_server, tmp_path):
    body = toy_zip()
    beir_server({"/beir/toy.zip": body}, truncate=True)
    with pytest.raises(DatasetError, match=rf"^dataset beir/toy: truncated download from .*: {len(body) // 2} of {len(body)} bytes"):
        resolve_dataset("beir/toy", cache=tmp_path, progress=False)
    assert leftovers(tmp_path) == []


def test_beir_http_error_and_unreachable_name_the_dataset(beir_server, tmp_path, monkeypatch):
    beir_server({})
    with pytest.raises(DatasetError, match=r"^dataset beir/nope: download of .*/nope\.zip failed: HTTP 404"):
        resolve_dataset("beir/nope", cache=tmp_path, progress=False)
    monkeypatch.setenv("BRAID_BEIR_URL", "http://127.0.0.1:9/beir")  # discard port: connection refused
    with pytest.raises(DatasetError, match=r"^dataset beir/toy: download of .* failed .*no cached copy"):
        resolve_dataset("beir/toy", cache=tmp_path, progress=False)
    with pytest.raises(DatasetError, match=r"expected beir/NAME"):
        resolve_dataset("beir/../etc", cache=tmp_path)
    assert leftovers(tmp_path) == []


def test_not_a_zip_is_an_error(beir_server, tmp_path):
    beir_server({"/beir/toy.zip": b"<html>a mirror's error page</html>"})
    with pytest.raises(DatasetError, match=r"not a valid zip archive"):
        resolve_dataset("beir/toy", cache=tmp_path, progress=False)
    assert leftovers(tmp_path) == []


def test_plain_paths_pass_through(tmp_path, toy_dataset):
    assert resolve_dataset(toy_dataset) == toy_dataset
    assert resolve_dataset(str(tmp_path / "missing")) == tmp_path / "missing"  # the caller reports it as before


def test_cache_root_and_url_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("BRAID_DATA", str(tmp_path))
    monkeypatch.delenv("BRAID_BEIR_URL", raising=False)
    assert datasets.cache_root() == tmp_path
    assert datasets.beir_url("scifact") == "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/scifact.zip"
    monkeypatch.setenv("BRAID_BEIR_URL", "http://mirror.example/beir/")
    assert datasets.beir_url("scifact") == "http://mirror.example/beir/scifact.zip"


def test_cli_eval_and_index_take_a_beir_name(beir_server, tmp_path, monkeypatch):
    from braid.cli.main import main

    body = toy_zip()
    monkeypatch.setitem(datasets.BEIR_MD5, "toy", hashlib.md5(body).hexdigest())
    beir_server({"/beir/toy.zip": body})
    monkeypatch.setenv("BRAID_DATA", str(tmp_path / "cache"))
    res = CliRunner().invoke(
        main, ["eval", "beir/toy", "--retriever", "bm25", "--index-root", str(tmp_path / "idx"), "--runs-dir", str(tmp_path / "runs"), "--json", "-q"]
    )
    assert res.exit_code == 0, res.output
    assert set(json.loads(res.stdout)["toy"]) >= {"ndcg@10", "recall@100"}
    res = CliRunner().invoke(main, ["index", "beir/toy", "--out", str(tmp_path / "idx2"), "-q"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["eval", "beir/absent", "--index-root", str(tmp_path / "idx"), "-q"])
    assert res.exit_code != 0 and "dataset beir/absent: download of" in res.output and "HTTP 404" in res.output


# ---------------------------------------------------------------------------------------------- ir_datasets
def register_toy_irds(tmp_path: Path, name: str) -> None:
    """Register ``NAME/test`` and ``NAME/train`` in ir_datasets' registry: the toy documents, and
    qrels split between the two (q1/q2 test, q3 train), from in-memory files."""
    ir_datasets = pytest.importorskip("ir_datasets", reason="ir_datasets is not installed (extra braid[datasets])")
    from ir_datasets.datasets.base import Dataset
    from ir_datasets.formats import TrecQrels, TsvDocs, TsvQueries
    from ir_datasets.util import StringFile

    docs = StringFile("".join(f"{d['_id']}\t{d['title']} {d['text']}\n" for d in TOY_DOCS), path=str(tmp_path / "docs.tsv"))
    queries = StringFile("".join(f"{q['_id']}\t{q['text']}\n" for q in TOY_QUERIES), path=str(tmp_path / "queries.tsv"))
    lines = [line.split("\t") for line in TOY_QRELS.strip().splitlines()[1:]]
    test = StringFile("".join(f"{q} 0 {d} {r}\n" for q, d, r in lines if q != "q3"), path=str(tmp_path / "test.qrels"))
    train = StringFile("".join(f"{q} 0 {d} {r}\n" for q, d, r in lines if q == "q3"), path=str(tmp_path / "train.qrels"))
    for split, qrels in (("test", test), ("train", train)):
        ir_datasets.registry.register(f"{name}/{split}", Dataset(TsvDocs(docs), TsvQueries(queries), TrecQrels(qrels, {1: "relevant"})))


def test_irds_export_shares_one_folder_between_splits(tmp_path, monkeypatch):
    monkeypatch.setenv("IR_DATASETS_HOME", str(tmp_path / "irds-home"))
    name = f"braid-toy-{tmp_path.name}"  # the registry is process-wide: a name per test run
    register_toy_irds(tmp_path, name)
    cache = tmp_path / "cache"
    notes = []
    folder = resolve_dataset(f"irds:{name}/test", cache=cache, progress=False, log=notes.append)
    assert folder == cache / "irds" / name and notes == [f"irds:{name}/test: exported to {folder}"]
    ds = BeirDataset(folder)
    assert ds.splits() == ["test"] and set(ds.qrels("test")) == {"q1", "q2"}
    assert ds.qrels("test")["q1"] == {"d4": 2, "d1": 1}
    from braid.data.corpus import iter_corpus

    docs = list(iter_corpus(ds.corpus_path))
    assert [d.doc_id for d in docs] == [d["_id"] for d in TOY_DOCS]
    assert docs[0].text == f"{TOY_DOCS[0]['title']} {TOY_DOCS[0]['text']}"  # GenericDoc: one text field
    assert export_irds(f"{name}/train", cache=cache, progress=False, log=notes.append) == folder
    assert ds.splits() == ["test", "train"] and set(ds.qrels("train")) == {"q3"}
    source = json.loads((folder / "braid-source.json").read_text())
    assert source["splits"] == {"test": f"{name}/test", "train": f"{name}/train"}
    assert [p.name for p in (cache / "irds").iterdir()] == [name]  # no partial folder left


def test_irds_unknown_id_and_location():
    pytest.importorskip("ir_datasets", reason="ir_datasets is not installed (extra braid[datasets])")
    with pytest.raises(DatasetError, match=r"^dataset irds:no-such/collection: not an ir_datasets id"):
        resolve_dataset("irds:no-such/collection")
    assert irds_location("beir/scifact/test") == ("beir/scifact", "test")
    assert irds_location("beir/scifact/train") == ("beir/scifact", "train")
    assert irds_location("cranfield") == ("cranfield", "test")
    assert irds_location("msmarco-passage/trec-dl-2019/judged") == ("msmarco-passage/trec-dl-2019/judged", "test")
