"""``braid train sparse`` on an index directory (:func:`train_sparse_index`) and installing the model (:func:`install_sparse`).

The index provides everything but the judgments: the base model and the IDF table of its sparse
component (the query side of ``sparse-if``), the teacher (its retrievers, through a
:class:`~braid.retrieval.searcher.Searcher`) and the candidates (its hybrid ranking). The mined
examples are kept in the checkpoint directory, so a resumed run trains on the very same data.
``--install`` re-encodes the corpus with the trained model into a new sparse component, swapped
in atomically by :func:`braid.retrieval.build.builder.add_components`; its manifest entry records
what the model was trained on (:func:`~braid.retrieval.train.leakage.training_record`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from braid.data.errors import DataError, OptionError
from braid.retrieval.train import checkpoint
from braid.retrieval.train.leakage import (
    REPORT_SPLIT,
    check_training_split,
    training_record,
)
from braid.retrieval.train.sparse.config import ADDED_AT_DEFAULT, SparseTrainConfig
from braid.retrieval.train.sparse.loop import TrainingExamples, train_sparse
from braid.retrieval.train.sparse.teacher import (
    combine_teachers,
    hybrid_ranking,
    score_spread,
    teacher_names,
    teacher_scores,
)

EXAMPLES_DIR = "examples"
MINING_FILE = "mining.json"


def default_checkpoint_dir(index_dir: str | Path) -> Path:
    """``.NAME.sparse-train`` next to the index."""
    return checkpoint.default_checkpoint_dir(index_dir, "sparse")


def corpus_texts(dataset_dir: str | Path, doc_ids: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(contents, titles, texts) by docno from the dataset's corpus; DataError when it lacks a document of the index."""
    from braid.data.beir import BeirDataset
    from braid.data.corpus import iter_corpus

    path = BeirDataset(Path(dataset_dir)).corpus_path
    docs = {d.doc_id: d for d in iter_corpus(path, skip_bad=True, allow_empty=True)}
    missing = [d for d in doc_ids if d not in docs]
    if missing:
        raise DataError(f"the corpus lacks {len(missing)} documents of the index (first: {missing[0]!r}); train with the dataset the index was built from", path)
    rows = [docs[d] for d in doc_ids]
    return [d.contents for d in rows], [d.title or "" for d in rows], [d.text or "" for d in rows]


def _sample(pool: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if len(pool) <= n:
        return pool
    return pool[np.sort(rng.choice(len(pool), size=n, replace=False))]


def _fill(chosen: list[int], want: int, exclude: set[int], num_docs: int, rng: np.random.Generator) -> list[int]:
    """Pad ``chosen`` to ``want`` docnos with random documents not in ``exclude`` (a short ranking)."""
    taken = set(chosen) | exclude
    while len(chosen) < want and len(taken) < num_docs:
        d = int(rng.integers(num_docs))
        if d not in taken:
            taken.add(d)
            chosen.append(d)
    return chosen


def mine_examples(searcher, config: SparseTrainConfig, queries: list[str], positives: list[np.ndarray] | None,
                  sources: np.ndarray | None, log: Callable[[str], None], threads: int = 1) -> TrainingExamples:
    """Candidates from the hybrid ranking and (unless contrastive) the teacher's scores over them.

    Supervised (``positives[i]``: the judged docnos of example ``i``; column 0 = its first one):
    candidates = that positive + ``candidates - 1`` hard negatives sampled from the hybrid's top
    ``candidate_depth`` (judged documents excluded). Corpus-only: the hybrid's top
    ``candidates // 2`` + a sample of the rest of its top ``candidate_depth`` (for the
    contrastive loss, column 0 is the document the pseudo-query was cut from; with
    ``exclude_source`` that document is left out of the ranking first).
    """
    c, depth, num_docs = config.candidates, config.candidate_depth, searcher.num_docs
    usable = num_docs - (1 if config.exclude_source else 0)  # a pseudo-query's own document is never its candidate
    if c > usable:
        raise OptionError("--candidates", c, f"at most the {usable} documents an example can draw from (the index holds {num_docs}"
                          + (", less the pseudo-query's own with --exclude-source)" if config.exclude_source else ")"))
    unique = sorted(set(queries))
    at = {q: i for i, q in enumerate(unique)}
    log(f"sparse: mining candidates for {len(unique)} queries from the hybrid ranking (top {depth})")
    ranking = hybrid_ranking(searcher, unique, min(depth, num_docs), threads=threads)
    cand = np.zeros((len(queries), c), dtype=np.int64)
    for i, q in enumerate(queries):
        rng = np.random.default_rng([config.seed, 11, i])
        row = ranking[at[q]]
        row = row[row >= 0]
        if positives is not None:
            judged = {int(d) for d in positives[i]}
            negs = _sample(np.array([d for d in row if int(d) not in judged], dtype=np.int64), c - 1, rng).tolist()
            chosen = [int(positives[i][0])] + _fill(negs, c - 1, judged | {int(positives[i][0])}, num_docs, rng)
        elif not config.distills:
            src = int(sources[i])
            rest = np.array([d for d in row if int(d) != src], dtype=np.int64)
            chosen = [src] + _fill(_sample(rest, c - 1, rng).tolist(), c - 1, {src}, num_docs, rng)
        else:
            if config.exclude_source:
                row = row[row != int(sources[i])]
            top = [int(d) for d in row[: c // 2]]
            chosen = top + _sample(row[c // 2 :], c - len(top), rng).tolist()
            chosen = _fill(chosen, c, {int(sources[i])} if config.exclude_source else set(), num_docs, rng)
        cand[i] = chosen[:c]
    labels = None
    if config.distills:
        names = teacher_names(searcher, config.teachers)
        times = "x the student's spread" if config.teacher_scale_from == "student" else f"x{config.teacher_scale:g}"
        log(f"sparse: teacher = {' + '.join(names)} (min-max per query, averaged, {times})")
        # each example's own candidates are scored (examples of one query text may have different ones)
        per_teacher = teacher_scores(searcher, queries, cand, names, min(config.teacher_depth, num_docs), threads=threads)
        if config.teacher_scale_from == "student":
            # the untrained student's own spread per example (sparse-if over the same candidates): KL then asks for the
            # teacher's order at the scale the student already has, instead of a rescaling of every document
            own = teacher_scores(searcher, queries, cand, ["sparse-if"], min(config.teacher_depth, num_docs), threads=threads)[0]
            scale = score_spread(own, config.teacher_scale)
            log(f"sparse: teacher scale = the student's spread per example (median {float(np.median(scale)):.1f}, "
                f"5-95 % {float(np.percentile(scale, 5)):.1f}-{float(np.percentile(scale, 95)):.1f})")
        else:
            scale = np.full(len(queries), config.teacher_scale, dtype=np.float32)
        labels = (combine_teachers(per_teacher) * scale[:, None]).astype(np.float32)
        if positives is not None and config.positive_boost:
            labels[:, 0] = scale
    return TrainingExamples(tuple(queries), cand, labels, config.source)


def _mining_key(index_dir: Path, config: SparseTrainConfig, split: str | None, dataset: dict | None) -> dict:
    from braid.index.manifest import read_manifest

    keys = ("source", "loss", "teachers", "candidates", "candidate_depth", "teacher_depth", "teacher_scale", "teacher_scale_from", "positive_boost", "pseudo_kinds", "exclude_source", "max_queries", "seed")
    m = read_manifest(index_dir)
    return {
        "index": str(index_dir.resolve()),
        "components": {k: v.get("encoder", {}).get("model") if isinstance(v, dict) else None for k, v in m["components"].items()},
        "num_docs": m["num_docs"],
        "split": split,
        "dataset": dataset,
        **{k: getattr(config, k) for k in keys if (k, getattr(config, k)) not in ADDED_AT_DEFAULT},
    }


def install_sparse(index_dir: str | Path, dataset_dir: str | Path, model_dir: str | Path, record: dict | None = None,
                   progress: bool = False, log: Callable[[str], None] | None = None, runtime: str = "auto") -> dict:
    """Re-encode ``index_dir``'s documents with the model folder ``model_dir`` into a new sparse component (atomically).

    The new component keeps the old one's blocked-index settings and ``max_length``; its
    manifest entry gets ``"training": record``. Returns the new manifest entry. A live index is
    refused (its segments would each need re-encoding into a new generation).
    """
    from braid.index.manifest import read_manifest
    from braid.retrieval.build.builder import BuildOptions, add_components
    from braid.retrieval.build.components import _encode_dir

    log = log or (lambda _m: None)
    index_dir = Path(index_dir)
    manifest = read_manifest(index_dir)
    if manifest.get("live"):
        raise OptionError("--install", str(index_dir), "a static index; re-encoding a live index's segments into a new generation is not supported (build a static index, or add the model with braid index --sparse-model)")
    sparse = manifest["components"].get("sparse") or {}
    enc = sparse.get("encoder") or {}
    options = BuildOptions(
        retrievers=("sparse",),
        overwrite=True,
        sparse_model=str(Path(model_dir).resolve()),
        max_length=int(enc.get("max_length", 256)),
        sparse_index=dict(sparse.get("requested_config") or {}),
        skip_bad=manifest.get("skipped_records", 0) > 0,
        # the manifest does not record --allow-empty; empty documents the index holds must be read back (cranfield has
        # two), and the corpus is checked against docids.txt, so allowing them never adds a document
        allow_empty=manifest.get("skipped_records", 0) == 0,
        progress=progress,
        runtime=runtime,
    )
    shutil.rmtree(_encode_dir(index_dir, "sparse"), ignore_errors=True)  # a cache of another model's vectors
    log(f"sparse: re-encoding {manifest['num_docs']} documents with {model_dir}")
    new = add_components(dataset_dir, index_dir, options, log=log, reuse_vectors=False, annotate={"training": record or {}})
    return new["components"]["sparse"]


def train_sparse_index(
    index_dir: str | Path,
    dataset_dir: str | Path,
    output_dir: str | Path,
    config: SparseTrainConfig | None = None,
    split: str = "train",
    checkpoint_dir: str | Path | None = None,
    install: bool = False,
    base_model: str | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    threads: int | None = None,
    stop_after_steps: int | None = None,
    report_split: str = REPORT_SPLIT,
    runtime: str = "auto",
) -> dict:
    """``braid train sparse``: train an inference-free document encoder for ``index_dir`` and save it to ``output_dir``.

    ``config.source="supervised"`` trains on ``dataset_dir``'s ``split`` qrels (``report_split``
    is refused); ``"corpus"`` on pseudo-queries from its corpus (no qrels read). ``base_model``:
    the model to start from (default: the index's sparse model). ``checkpoint_dir``: None uses
    :func:`default_checkpoint_dir`, removed after success; an explicit one is kept. Re-running
    after an interruption (or after ``stop_after_steps``) resumes. ``install``: re-encode the
    index with the trained model (:func:`install_sparse`). Returns a summary dict.
    """
    from braid.encoders.sparse import IdfTable, SparseEncoder
    from braid.index.manifest import read_docids, read_manifest
    from braid.retrieval.searcher import Searcher
    from braid.retrieval.train.sparse.queries import pseudo_queries

    config = config or SparseTrainConfig()
    log = log or (lambda _m: None)
    index_dir = Path(index_dir)
    if config.source == "supervised":
        check_training_split(split, report_split)
    manifest = read_manifest(index_dir)
    sparse = manifest["components"].get("sparse")
    if not isinstance(sparse, dict):
        raise OptionError("INDEX_DIR", str(index_dir), "an index with a sparse component (build it with --retrievers bm25,sparse,dense)")
    enc = sparse.get("encoder") or {}
    base = base_model or (sparse.get("training") or {}).get("base_model") or enc.get("model_dir") or enc.get("model")
    if not base:
        raise OptionError("--base-model", None, "a SPLADE model folder (the index's sparse component records none)")
    idf_path = index_dir / str(sparse.get("idf_path", "sparse/idf.npy"))
    idf = IdfTable.load(idf_path).weights if idf_path.exists() else SparseEncoder(str(base), query_mode="idf").idf.weights
    doc_ids = read_docids(index_dir, manifest=manifest)
    contents, titles, texts = corpus_texts(dataset_dir, doc_ids)

    explicit = checkpoint_dir is not None
    ckdir = Path(checkpoint_dir) if explicit else default_checkpoint_dir(index_dir)
    record = {"dataset": training_record(dataset_dir, split)["dataset"], "split": split} if config.source == "supervised" else {
        "dataset": _corpus_record(dataset_dir), "split": None}
    record["source"] = config.source
    key = _mining_key(index_dir, config, split if config.source == "supervised" else None, record["dataset"])
    exdir = ckdir / EXAMPLES_DIR
    examples = TrainingExamples.load(exdir)
    if examples is not None:
        theirs = json.loads((exdir / MINING_FILE).read_text(encoding="utf-8")) if (exdir / MINING_FILE).is_file() else {}
        checkpoint.check_fingerprint(ckdir, theirs, key)
        log(f"sparse: reusing the {len(examples)} mined examples in {exdir}")
    else:
        searcher = Searcher(index_dir)
        if config.source == "supervised":
            from braid.retrieval.train.pairs import training_set_from_dataset

            data = training_set_from_dataset(dataset_dir, split, doc_ids, report_split)
            queries = [data.texts[int(q)] for q in data.pair_query]
            positives = []
            for i, q in enumerate(data.pair_query):
                pos = data.positives(int(q))
                positives.append(np.concatenate([[data.pair_docno[i]], pos[pos != data.pair_docno[i]]]))
            log(f"sparse: {len(data.query_ids)} {split} queries, {data.n_pairs} pairs ({data.skipped} judged queries skipped)")
            examples = mine_examples(searcher, config, queries, positives, None, log, threads or 1)
        else:
            queries, sources = pseudo_queries(titles, texts, config.pseudo_kind_list, config.max_queries, config.seed)
            if not queries:
                raise DataError("no pseudo-query could be cut from the corpus (no titles or sentences of 4+ words)", dataset_dir)
            log(f"sparse: {len(queries)} pseudo-queries ({config.pseudo_kinds}) from {len(doc_ids)} documents")
            examples = mine_examples(searcher, config, queries, None, sources, log, threads or 1)
        tmp = ckdir / f".{EXAMPLES_DIR}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        examples.save(tmp)
        (tmp / MINING_FILE).write_text(json.dumps(key, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        from braid.index.manifest import replace_directory

        replace_directory(tmp, exdir)
    full_record = {**record, "index": str(index_dir.resolve()), "teachers": config.teachers if config.distills else None}
    result = train_sparse(base, idf, examples, contents, output_dir, config, ckdir, progress=progress, log=log,
                          stop_after_steps=stop_after_steps, threads=threads, record={"trained_on": full_record})
    finished = (Path(output_dir) / "braid_training.json").is_file() and result.steps > 0 and _finished(ckdir)
    summary = {
        "examples": len(examples),
        "steps": result.steps,
        "finished": finished,
        "resumed_at_step": result.resumed_at_step,
        "seconds": round(result.seconds, 1),
        "device": result.device,
        "losses": [round(float(h["loss"]), 6) for h in result.history],
        "model_dir": str(output_dir),
        "installed": None,
    }
    if not finished:
        return summary
    if install:
        info = install_sparse(index_dir, dataset_dir, output_dir, {"model": str(Path(output_dir).resolve()), "base_model": str(base), "config": config.to_dict(), **full_record},
                              progress=progress, log=log, runtime=runtime)
        summary["installed"] = isinstance(info, dict) and "training" in info
    if not explicit:
        shutil.rmtree(ckdir, ignore_errors=True)
    return summary


def _finished(ckdir: Path) -> bool:
    try:
        state = json.loads((ckdir / "state.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return int(state.get("step", 0)) >= int(state.get("max_steps", 1 << 62))


def _corpus_record(dataset_dir: str | Path) -> dict:
    from braid.data.beir import BeirDataset
    from braid.retrieval.train.leakage import file_sha256

    ds = BeirDataset(Path(dataset_dir))
    return {"name": ds.name, "path": str(ds.root.resolve()), "corpus": ds.corpus_path.name, "corpus_sha256": file_sha256(ds.corpus_path)}
