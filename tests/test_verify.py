"""Manifest schema, checksums and ``braid verify``: a flipped byte in each kind of component file
(tantivy, the sparse index's .npy arrays, the FAISS file, the kept vectors, docids.txt) is named by
verify; a truncated or missing file stops the index from opening; every malformed manifest field
gives an IndexFormatError naming the manifest and the field.

The index is built once per module from the seeded synthetic corpus and the tiny random BERTs of
test_sharded.py (real encoding, fast); each test damages its own copy.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from braid.cli.main import main
from braid.data.errors import IndexFormatError
from braid.index.manifest import read_manifest, verify_index
from braid.retrieval.searcher import Searcher

pytest.importorskip("torch")
pytest.importorskip("faiss")

_spec = importlib.util.spec_from_file_location("_braid_verify_helpers", Path(__file__).with_name("test_sharded.py"))
_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import torch

    from braid.retrieval.build.builder import BuildOptions, build_index

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("verify")
    models = {"sparse": _helpers.make_tiny_bert(root / "tiny-splade", mlm=True), "dense": _helpers.make_tiny_bert(root / "tiny-dense", mlm=False, seed=1)}
    data, queries = _helpers.synthetic_corpus(root / "data", n_docs=40)
    options = BuildOptions(
        retrievers=("bm25", "sparse", "dense"), progress=False, sparse_model=str(models["sparse"]),
        dense_model=str(models["dense"]), max_length=48, chunk_size=16,
    )  # fmt: skip
    build_index(data, root / "index", options, log=lambda m: None)
    return {"root": root, "data": data, "queries": queries, "options": options, "index": root / "index"}


@pytest.fixture(scope="module")
def built(setup) -> Path:
    return setup["index"]


@pytest.fixture()
def index(built, tmp_path) -> Path:
    """A private copy of the built index, to damage."""
    return Path(shutil.copytree(built, tmp_path / "index"))


def _one_file(index: Path, kind: str) -> str:
    """A file of the given kind, relative to the index."""
    pattern = {"tantivy": "bm25/*.store", "npy": "sparse/*.npy", "faiss": "dense/dense.faiss", "vectors": "vectors/dense/vectors.npy"}[kind]
    files = sorted(index.glob(pattern), key=lambda p: p.stat().st_size)
    assert files, f"the build wrote no {pattern}"
    return files[-1].relative_to(index).as_posix()


def _flip(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    i = int(len(data) * at)
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def test_checksums_are_the_sha256_of_every_file(built):
    """Independent reference: hashlib over the files on disk; every file but the manifest is recorded."""
    manifest = read_manifest(built)
    on_disk = sorted(p.relative_to(built).as_posix() for p in built.rglob("*") if p.is_file() and p.name != "manifest.json")
    assert sorted(manifest["checksums"]) == on_disk
    for rel, entry in manifest["checksums"].items():
        data = (built / rel).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert verify_index(built) == []
    result = CliRunner().invoke(main, ["verify", str(built)])
    assert result.exit_code == 0, result.output
    assert f"{len(on_disk)} files intact" in result.output


@pytest.mark.parametrize("kind", ["tantivy", "npy", "faiss", "vectors"])
def test_verify_names_a_flipped_byte(index, kind):
    rel = _one_file(index, kind)
    _flip(index / rel)
    problems = verify_index(index)
    assert [(p.kind, p.path) for p in problems] == [("checksum", rel)]
    result = CliRunner().invoke(main, ["verify", str(index)])
    assert result.exit_code == 1
    assert str(index / rel) in result.output and "1 problem" in result.output


@pytest.mark.parametrize("kind", ["tantivy", "npy", "faiss", "vectors"])
def test_truncated_file_does_not_open(index, kind):
    rel = _one_file(index, kind)
    path = index / rel
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(IndexFormatError, match=f"{rel}: .* bytes, the manifest records"):
        Searcher(index)
    assert [(p.kind, p.path) for p in verify_index(index)] == [("size", rel)]


def test_missing_and_extra_files(index):
    rel = _one_file(index, "npy")
    (index / rel).unlink()
    (index / "notes.txt").write_text("mine")
    (index / "sparse" / "stray.npy").write_bytes(b"x")
    (index / "old-dense").mkdir()
    (index / ".build.tmp-1").mkdir()  # hidden top-level entries (temporaries, locks) are not the index's
    with pytest.raises(IndexFormatError, match="missing"):
        Searcher(index)
    got = sorted((p.kind, p.path) for p in verify_index(index))
    assert got == sorted([("missing", rel), ("extra", "notes.txt"), ("extra", "sparse/stray.npy"), ("extra", "old-dense/")])


def test_reordered_docids_is_refused_at_open(index):
    lines = (index / "docids.txt").read_text().splitlines()
    lines[0], lines[1] = lines[1], lines[0]
    (index / "docids.txt").write_text("\n".join(lines) + "\n")  # same size: only the hash tells
    with pytest.raises(IndexFormatError, match="docids.txt: does not match the checksum"):
        Searcher(index)
    assert [(p.kind, p.path) for p in verify_index(index)] == [("checksum", "docids.txt")]


def test_manifest_without_checksums_opens_but_cannot_be_verified(index):
    manifest = json.loads((index / "manifest.json").read_text())
    del manifest["checksums"]
    (index / "manifest.json").write_text(json.dumps(manifest))
    assert Searcher(index, retriever="bm25").search("apple", k=1)
    assert [p.kind for p in verify_index(index)] == ["unchecked"]
    assert CliRunner().invoke(main, ["verify", str(index)]).exit_code == 1


def test_adding_a_component_rewrites_the_checksums(toy_dataset, tmp_path):
    from braid.retrieval.build.builder import BuildOptions, add_components, build_index

    out = tmp_path / "idx"
    build_index(toy_dataset, out, BuildOptions(progress=False), log=lambda m: None)
    before = read_manifest(out)["checksums"]
    add_components(toy_dataset, out, BuildOptions(retrievers=("bm25",), overwrite=True, progress=False), log=lambda m: None)
    after = read_manifest(out)["checksums"]
    assert after["docids.txt"] == before["docids.txt"]
    assert {k for k in after if k.startswith("bm25/")} and after != before  # tantivy writes new segment files
    assert verify_index(out) == []


# The schema: every field of the manifest is type-checked when it is read ------------------------
SCHEMA_CASES = [
    # (mutation, the field the message must name)
    (lambda m: m.update(components=["bm25"]), "'components'"),
    (lambda m: m["components"].update(bm25=None), "'components.bm25'"),
    (lambda m: m["components"].update(bm25=[1, 2]), "'components.bm25'"),
    (lambda m: m["components"]["bm25"].pop("num_docs"), "'components.bm25' lacks 'num_docs'"),
    (lambda m: m["components"]["sparse"].update(encoder="splade"), "'components.sparse.encoder'"),
    (lambda m: m["components"]["dense"]["encoder"].pop("model"), "'components.dense.encoder'"),
    (lambda m: m["components"].update({"../etc": {}}), "component name '../etc'"),
    (lambda m: m.update(num_docs="40"), "'num_docs'"),
    (lambda m: m.update(num_docs=-1), "'num_docs'"),
    (lambda m: m.update(num_docs=True), "'num_docs'"),
    (lambda m: m.update(format_version=True), "format_version"),
    (lambda m: m.update(format_version="1"), "format_version"),
    (lambda m: m.pop("num_docs"), "lacks 'num_docs'"),
    (lambda m: m.update(library_version=1), "'library_version'"),
    (lambda m: m.update(corpus={"path": 3}), "'corpus'"),
    (lambda m: m.update(skipped_records=1.5), "'skipped_records'"),
    (lambda m: m.update(checksums=[]), "'checksums'"),
    (lambda m: m["checksums"].update({"../../etc/passwd": {"size": 1, "sha256": "0" * 64}}), "'../../etc/passwd' is not a relative path"),
    (lambda m: m["checksums"].update({"/etc/passwd": {"size": 1, "sha256": "0" * 64}}), "is not a relative path"),
    (lambda m: m["checksums"].update({"docids.txt": {"size": -1, "sha256": "0" * 64}}), "'checksums.docids.txt'"),
    (lambda m: m["checksums"].update({"docids.txt": {"size": 1, "sha256": "xyz"}}), "'checksums.docids.txt'"),
    (lambda m: m["checksums"].update({"docids.txt": None}), "'checksums.docids.txt'"),
]


@pytest.mark.parametrize("case", range(len(SCHEMA_CASES)))
def test_manifest_schema_names_the_field(index, case):
    mutate, field = SCHEMA_CASES[case]
    path = index / "manifest.json"
    manifest = json.loads(path.read_text())
    mutate(manifest)
    path.write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError) as err:
        Searcher(index)
    assert str(path) in str(err.value) and field in str(err.value)
    with pytest.raises(IndexFormatError):  # verify has nothing to check against either
        verify_index(index)
    result = CliRunner().invoke(main, ["verify", str(index)])
    assert result.exit_code == 1 and field in result.output and "Traceback" not in result.output


# The vectors kept beside the index, and --no-vectors -------------------------------------------
def _size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def test_vectors_are_kept_once(built):
    """The encoding cache's chunks are gone once it is complete: each vector is stored once in vectors/KIND."""
    import numpy as np

    assert not list(built.rglob("chunk-*.npz"))
    assert sorted(p.name for p in (built / "vectors" / "dense").iterdir()) == ["cache.json", "complete.json", "vectors.npy"]
    assert sorted(p.name for p in (built / "vectors" / "sparse").iterdir()) == ["cache.json", "complete.json", "data.npy", "indices.npy", "indptr.npy"]
    assert np.load(built / "vectors" / "dense" / "vectors.npy").shape[0] == 40


@pytest.mark.parametrize("dense_index", [{"kind": "flat"}, {"kind": "pq", "m": 4, "nbits": 4}])
def test_no_vectors_keeps_only_the_index_files(setup, tmp_path, dense_index):
    """--no-vectors: no vectors/ directory; the same results for exact search; rescoring reads the
    FAISS file instead (exact for flat, PQ-decoded for pq); verify is clean; the CLI flag arrives."""
    from dataclasses import replace

    import numpy as np

    from braid.retrieval.build.builder import build_index

    kept = tmp_path / "kept"
    lean = tmp_path / "lean"
    build_index(setup["data"], kept, replace(setup["options"], dense_index=dense_index), log=lambda m: None)
    build_index(setup["data"], lean, replace(setup["options"], dense_index=dense_index, keep_vectors=False), log=lambda m: None)
    assert (kept / "vectors").is_dir() and not (lean / "vectors").exists()
    assert not list(tmp_path.glob(".*encode-*"))  # the encoding caches were removed, not left beside the index
    def files(root):  # tantivy names its segment files by random UUIDs: compare their extensions
        rel = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
        return sorted(f"bm25/*{Path(r).suffix}" if r.startswith("bm25/") and not Path(r).name.startswith(".") and Path(r).name != "meta.json" else r for r in rel)

    assert files(lean) == [f for f in files(kept) if not f.startswith("vectors/")]
    assert _size(lean) < _size(kept) - _size(kept / "vectors") + 4096  # what is left is the index (+ a manifest's worth)
    assert verify_index(lean) == []
    queries = list(setup["queries"].values())[:6]
    for name in ("bm25", "sparse", "dense"):
        a = Searcher(kept, retriever=name).batch_search(queries, k=5)
        b = Searcher(lean, retriever=name).batch_search(queries, k=5)
        assert a.doc_ids == b.doc_ids and len(a.doc_ids[0]) == 5
    kept_dense = Searcher(kept, retriever="dense").retriever("dense")
    lean_dense = Searcher(lean, retriever="dense").retriever("dense")
    assert kept_dense.vectors is not None and lean_dense.vectors is None
    docnos = np.arange(10)
    exact = np.load(kept / "vectors" / "dense" / "vectors.npy")[docnos]
    np.testing.assert_array_equal(lean_dense.doc_vectors(docnos), lean_dense.index.reconstruct(docnos))
    if dense_index["kind"] == "flat":  # the FAISS file holds the float vectors themselves
        np.testing.assert_allclose(lean_dense.doc_vectors(docnos), exact, rtol=1e-6)
    else:  # only the codes: rescoring uses decoded vectors
        assert not np.allclose(lean_dense.doc_vectors(docnos), exact)
    np.testing.assert_array_equal(kept_dense.doc_vectors(docnos), exact)


def test_no_vectors_cli_flag(toy_dataset, tmp_path, monkeypatch):
    import braid.retrieval.build.builder as builder

    seen = {}
    monkeypatch.setattr(builder, "build_index", lambda source, out, build, log: seen.setdefault("build", build) and {"num_docs": 0, "components": {}})
    assert CliRunner().invoke(main, ["index", str(toy_dataset), "--out", str(tmp_path / "x"), "--no-vectors", "-q"]).exit_code == 0
    assert seen["build"].keep_vectors is False
    seen.clear()
    assert CliRunner().invoke(main, ["index", str(toy_dataset), "--out", str(tmp_path / "x"), "-q"]).exit_code == 0
    assert seen["build"].keep_vectors is True


# `braid search --json` on this learned index records the query knobs in its recipe --------------
def test_search_json_recipe_records_the_knobs(built):
    runner = CliRunner()
    res = runner.invoke(main, ["search", str(built), "apple tree", "-r", "sparse", "--query-cut", "20", "--heap-factor", "0.9", "--json"])
    assert res.exit_code == 0, res.output
    recipe = json.loads(res.output)["recipe"]
    assert {k: v for k, v in recipe.items() if k != "runtime"} == {"retriever": "sparse", "query_cut": 20, "heap_factor": 0.9}
    assert set(recipe["runtime"]) == {"sparse"}  # what encoded the queries (issue 14)
    res = runner.invoke(main, ["search", str(built), "apple tree", "--pipeline", "hybrid", "--query-cut", "5", "--json"])
    assert res.exit_code == 0, res.output
    recipe = json.loads(res.output)["recipe"]
    assert recipe["name"] == "hybrid" and recipe["knobs"] == {"query_cut": 5}
