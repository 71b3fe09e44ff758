"""Index directory: manifest checks, version refusal, atomic builds (a killed build leaves nothing openable)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from braid.data.errors import IndexFormatError, OptionError
from braid.index.manifest import FORMAT_VERSION, read_manifest
from braid.retrieval.build.builder import BuildOptions, build_index
from braid.retrieval.searcher import Searcher


def test_build_and_open(toy_dataset, tmp_path):
    out = tmp_path / "idx"
    manifest = build_index(toy_dataset, out, BuildOptions(progress=False))
    assert manifest["num_docs"] == 6
    assert manifest["format_version"] == FORMAT_VERSION
    assert set(manifest["components"]) == {"bm25"}
    assert Searcher(out).search("cats purr", k=2)[0]["id"] in {"d1", "d4"}


def test_existing_directory_needs_overwrite(toy_dataset, tmp_path):
    out = tmp_path / "idx"
    build_index(toy_dataset, out, BuildOptions(progress=False))
    with pytest.raises(OptionError, match="--overwrite"):
        build_index(toy_dataset, out, BuildOptions(progress=False))
    build_index(toy_dataset, out, BuildOptions(progress=False, overwrite=True))
    assert read_manifest(out)["num_docs"] == 6


def test_refuses_foreign_corrupt_and_future(tmp_path, toy_dataset):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "something.txt").write_text("hi")
    with pytest.raises(IndexFormatError, match="not a Braid index"):
        Searcher(foreign)
    with pytest.raises(IndexFormatError, match="no such index directory"):
        Searcher(tmp_path / "missing")
    out = tmp_path / "idx"
    build_index(toy_dataset, out, BuildOptions(progress=False))
    manifest_path = out / "manifest.json"
    good = manifest_path.read_text()
    manifest_path.write_text(good[: len(good) // 2])
    with pytest.raises(IndexFormatError, match="corrupted manifest"):
        Searcher(out)
    data = json.loads(good)
    data["format_version"] = FORMAT_VERSION + 1
    manifest_path.write_text(json.dumps(data))
    with pytest.raises(IndexFormatError, match=f"version {FORMAT_VERSION + 1} is not supported"):
        Searcher(out)
    data["format_version"] = FORMAT_VERSION
    data["format"] = "something-else"
    manifest_path.write_text(json.dumps(data))
    with pytest.raises(IndexFormatError, match="not a Braid index manifest"):
        Searcher(out)
    manifest_path.write_text(good)
    import shutil

    shutil.rmtree(out / "bm25")
    with pytest.raises(IndexFormatError, match="component 'bm25'"):
        Searcher(out)


def test_bad_input_leaves_existing_index_intact(toy_dataset, tmp_path):
    out = tmp_path / "idx"
    build_index(toy_dataset, out, BuildOptions(progress=False))
    before = (out / "manifest.json").read_text()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "a", "text": "fine"}\n{"_id": "b", "text": \n')
    from braid.data.errors import DataError

    with pytest.raises(DataError, match="bad.jsonl, line 2"):
        build_index(bad, out, BuildOptions(progress=False, overwrite=True))
    assert (out / "manifest.json").read_text() == before
    assert Searcher(out).search("cats", k=1)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".idx.tmp")]


def test_killed_build_leaves_no_openable_index(tmp_path, toy_dataset):
    """Kill -9 a build midway: the new directory does not open, the old one is untouched."""
    corpus = tmp_path / "slow" / "corpus.jsonl"
    corpus.parent.mkdir()
    with open(corpus, "w") as fh:
        for i in range(200_000):
            fh.write(json.dumps({"_id": f"d{i}", "title": "", "text": f"document number {i} about topic {i % 97}"}) + "\n")
    existing = tmp_path / "existing"
    build_index(toy_dataset, existing, BuildOptions(progress=False))
    before = (existing / "manifest.json").read_text()
    script = textwrap.dedent(
        f"""
        from braid.retrieval.build.builder import BuildOptions, build_index
        build_index({str(corpus)!r}, {str(tmp_path / 'new')!r}, BuildOptions(progress=False))
        """
    )
    script_over = script.replace(str(tmp_path / "new"), str(existing)).replace("progress=False", "progress=False, overwrite=True")
    for code, target in ((script, tmp_path / "new"), (script_over, existing)):
        proc = subprocess.Popen([sys.executable, "-c", code])
        deadline = time.time() + 60
        while time.time() < deadline and not list(tmp_path.glob(f".{target.name}.tmp-*")):
            time.sleep(0.05)
        time.sleep(0.5)
        assert proc.poll() is None, "the build finished before it could be killed; make the corpus larger"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with pytest.raises(IndexFormatError):
        Searcher(tmp_path / "new")
    assert (existing / "manifest.json").read_text() == before
    assert Searcher(existing).search("wolf", k=1)[0]["id"] == "d3"
    # the next build cleans the stale temporary directories of dead builds
    build_index(toy_dataset, tmp_path / "new", BuildOptions(progress=False))
    assert not list(tmp_path.glob(".new.tmp-*"))


def test_replace_directory(tmp_path):
    from braid.index.manifest import replace_directory

    new, dst = tmp_path / ".new", tmp_path / "dst"
    new.mkdir()
    (new / "a").write_text("1")
    replace_directory(new, dst)  # nothing to replace
    assert (dst / "a").read_text() == "1" and not new.exists()
    new.mkdir()
    (new / "b").write_text("2")
    replace_directory(new, dst, old=tmp_path / "dst.old")
    assert sorted(p.name for p in dst.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst"]  # the old copy and the source are gone


@pytest.mark.parametrize("umask, dir_mode, file_mode", [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600), (0o002, 0o775, 0o664)])
def test_index_modes_follow_the_umask(toy_dataset, tmp_path, umask, dir_mode, file_mode):
    """Temporary build directories and atomic writes are 0700/0600 whatever the umask; the finished
    index must have the modes any directory made under this umask has (a service running as another
    user reads a 0755/0644 index), after a build, after adding a component and after a manifest write."""
    import stat

    from braid.retrieval.build.builder import add_components

    def modes(root):
        dirs = {stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")] if p.is_dir()}
        files = {stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*") if p.is_file()}
        return dirs, files

    old = os.umask(umask)
    try:
        out = tmp_path / "idx"
        build_index(toy_dataset, out, BuildOptions(progress=False))
        assert modes(out) == ({dir_mode}, {file_mode})
        add_components(toy_dataset, out, BuildOptions(retrievers=("bm25",), overwrite=True, progress=False), log=lambda m: None)
        assert modes(out) == ({dir_mode}, {file_mode})
        reference = tmp_path / "plain"  # what mkdir / open give under this umask, independently
        reference.mkdir()
        (reference / "f").write_text("x")
        assert modes(reference) == ({dir_mode}, {file_mode})
    finally:
        os.umask(old)


def test_one_writer_per_index_directory(toy_dataset, tmp_path):
    """Two builds into one --out, a build replacing an index a writer holds, and a component added while
    another writer holds the index are refused naming the holder's pid; the index stays as it was."""
    import subprocess as sp

    from braid.index.generations import IndexLockedError, writer_lock
    from braid.retrieval.build.builder import add_components

    out = tmp_path / "idx"
    # another process building into the same --out: it holds the lock beside the directory
    holder = sp.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from braid.index.generations import writer_lock
        with writer_lock(Path({str(tmp_path)!r}), path=Path({str(tmp_path)!r}) / ".idx.write.lock"):
            print("held", flush=True)
            time.sleep(60)
    """)], stdout=sp.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(IndexLockedError, match=f"pid {holder.pid}"):
            build_index(toy_dataset, out, BuildOptions(retrievers=("bm25",), progress=False), log=lambda m: None)
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its lock is stale and taken over
    build_index(toy_dataset, out, BuildOptions(retrievers=("bm25",), progress=False), log=lambda m: None)
    before = (out / "manifest.json").read_bytes()
    with writer_lock(out):  # e.g. a `braid add` in progress
        with pytest.raises(IndexLockedError, match=f"pid {os.getpid()}"):
            build_index(toy_dataset, out, BuildOptions(retrievers=("bm25",), progress=False, overwrite=True), log=lambda m: None)
        with pytest.raises(IndexLockedError, match="one writer at a time"):
            add_components(toy_dataset, out, BuildOptions(retrievers=("bm25",), progress=False, overwrite=True), log=lambda m: None)
    assert (out / "manifest.json").read_bytes() == before
    assert not (out / "write.lock").exists() and not (tmp_path / ".idx.write.lock").exists()


def test_a_build_reports_the_stale_lock_it_takes_over(toy_dataset, tmp_path, capsys):
    import json as _json

    (tmp_path / ".idx.write.lock").write_text(_json.dumps({"pid": 2**22 + 12345, "host": __import__("socket").gethostname(), "started": "then"}))
    build_index(toy_dataset, tmp_path / "idx", BuildOptions(retrievers=("bm25",), progress=False), log=lambda m: None)
    assert "stale writer lock" in capsys.readouterr().err and (tmp_path / "idx" / "manifest.json").exists()
