"""BEIR-style evaluation runs: build or reuse an index per dataset, search its queries, score, write files."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

from braid.data.beir import BeirDataset
from braid.data.corpus import ReadStats
from braid.data.errors import IndexFormatError
from braid.data.runs import write_run
from braid.index.manifest import read_manifest
from braid.retrieval.build.builder import BuildOptions, add_components, build_index
from braid.retrieval.eval.evaluate import evaluate


def components_needed(retriever: str | None, pipeline, options: BuildOptions, index_exists: bool = False) -> set[str]:
    """Components to build for a search with ``retriever`` / ``pipeline``. A new index gets the build
    options' components too; an existing one only what the search needs (asking for ``-r dense`` on a
    dense-only index must not add a BM25 component to it)."""
    from braid.retrieval import retrievers as registry

    need = set() if (index_exists and (retriever is not None or pipeline is not None)) else set(options.retrievers)
    if retriever is not None:
        if retriever in registry.RETRIEVERS:
            need.add(registry.get(retriever).component)
    if pipeline is not None:
        from braid.retrieval.pipeline.spec import pipeline_components

        need |= pipeline_components(pipeline)
    return need


def ensure_index(dataset: BeirDataset, index_dir: Path, need: set[str], options: BuildOptions, rebuild: bool, log) -> None:
    """Build ``index_dir`` for ``dataset`` with at least the components ``need`` (reusing what exists)."""
    if index_dir.exists() and not rebuild:
        try:
            manifest = read_manifest(index_dir)
        except IndexFormatError as exc:
            raise IndexFormatError(f"{exc}; pass --rebuild to replace it") from None
        missing = sorted(need - set(manifest["components"]))
        if missing:
            log(f"{dataset.name}: adding {', '.join(missing)} to {index_dir}")
            # the dense index type is for a dense component being added; one that exists keeps its own
            dense_index = options.dense_index if "dense" in missing or "dense" not in manifest["components"] else {}
            add_components(dataset.root, index_dir, replace(options, retrievers=tuple(missing), dense_index=dense_index), log=log)
        return
    opts = replace(options, retrievers=tuple(sorted(need or set(options.retrievers))), overwrite=rebuild or options.overwrite)
    log(f"{dataset.name}: building {', '.join(opts.retrievers)} into {index_dir}")
    build_index(dataset.root, index_dir, opts, log=log)


def unknown_judgments(qrels: dict, queries: dict, doc_ids: Sequence[str]) -> dict:
    """How many judged documents are not in the index and judged queries not in the queries file."""
    known = set(doc_ids)
    docs = sorted({d for judged in qrels.values() for d in judged if d not in known})
    missing_q = sorted(q for q in qrels if q not in queries)
    first = (f"document {docs[0]!r}" if docs else f"query {missing_q[0]!r}") if (docs or missing_q) else None
    return {"documents": len(docs), "queries": len(missing_q), "first": first}


def search_run(
    searcher,
    queries: dict[str, str],
    k: int = 1000,
    retriever=None,
    threads: int = 1,
    exclude_self: bool = True,
    progress: bool = False,
    desc: str = "search",
    **knobs,
) -> tuple[dict[str, dict[str, float]], str | None]:
    """Search ``queries`` (``{query_id: text}``) in batches of 64; return ``(run, name of what ran)``."""
    from tqdm.auto import tqdm

    qids = list(queries)
    run: dict[str, dict[str, float]] = {}
    system = None
    batch = 64
    with tqdm(total=len(qids), disable=not progress, desc=desc, unit="q") as bar:
        for start in range(0, len(qids), batch):
            part = {q: queries[q] for q in qids[start : start + batch]}
            res = searcher.batch_search(part, k=k, retriever=retriever, threads=threads, exclude_self=exclude_self, **knobs)
            run.update(res.to_run())
            system = res.retriever
            bar.update(len(part))
    return run, system


def evaluate_datasets(
    datasets: Sequence[str | Path],
    index_root: Path,
    build: BuildOptions,
    rebuild: bool = False,
    split: str = "test",
    k: int = 1000,
    metrics: Sequence[str] = ("ndcg@10", "recall@100"),
    retriever: str | None = None,
    pipeline: str | None = None,
    knobs: dict | None = None,
    remove_self_hits: bool = True,
    runs_dir: Path | None = Path("runs"),
    threads: int = 1,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, float]]:
    """Evaluate each BEIR dataset folder; return ``{dataset_name: {metric: mean}}``.

    Writes ``RUNS_DIR/NAME/SYSTEM.SPLIT.trec`` (TREC run) and ``...metrics.json`` (mean and per
    query) when ``runs_dir`` is given.
    """
    from braid.retrieval.searcher import Searcher

    knobs = knobs or {}
    results: dict[str, dict[str, float]] = {}
    for root in datasets:
        dataset = BeirDataset(root)
        read = ReadStats()
        qrels = dataset.qrels(split, skip_bad=build.skip_bad, stats=read)
        queries = dataset.queries(split, skip_bad=build.skip_bad, stats=read)
        if read.skipped:
            log(f"{dataset.name}: skipped {read.skipped} bad query/qrels lines (first: {read.reasons[0]})")
        index_dir = Path(index_root) / dataset.name
        from braid.retrieval.scale.sharded import is_sharded_index, open_searcher

        if is_sharded_index(index_dir):
            # A sharded index (``braid shard``) is searched as it is: exact top-k merge over its shards.
            searcher = open_searcher(index_dir, retriever=retriever, pipeline=pipeline, processes=0, runtime=build.runtime)
        else:
            exists = index_dir.exists() and not rebuild
            ensure_index(dataset, index_dir, components_needed(retriever, pipeline, build, exists), build, rebuild, log)
            searcher = Searcher(index_dir, retriever=retriever, pipeline=pipeline, runtime=build.runtime)
        recipe = searcher.recipe(None, **knobs)
        unknown = unknown_judgments(qrels, queries, searcher.doc_ids)
        if unknown["documents"] or unknown["queries"]:
            log(
                f"{dataset.name}: qrels/{split}.tsv judges {unknown['documents']} documents not in the index"
                f" and {unknown['queries']} queries not in the queries file (first: {unknown['first']}); they count as unretrieved"
            )
        run, system = search_run(searcher, queries, k=k, threads=threads, exclude_self=remove_self_hits, progress=progress, desc=f"search {dataset.name}", **knobs)
        mean, per_query = evaluate(run, qrels, metrics, ignore_identical_ids=remove_self_hits)
        results[dataset.name] = mean
        if runs_dir is not None:
            out = Path(runs_dir) / dataset.name
            tag = (system or "braid").replace(" ", "_")
            write_run(run, out / f"{tag}.{split}.trec", tag=tag)
            (out / f"{tag}.{split}.metrics.json").write_text(
                json.dumps(
                    {"dataset": dataset.name, "split": split, "system": tag, "recipe": recipe, "mean": mean,
                     "skipped_lines": read.skipped, "unknown_judgments": unknown, "per_query": per_query},
                    indent=1,
                )
            )
        log(f"{dataset.name}: " + "  ".join(f"{m} {v:.4f}" for m, v in mean.items()))
    return results
