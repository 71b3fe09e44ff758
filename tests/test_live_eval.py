"""``braid eval --filter`` on a live index, against an independent reference.

A filtered evaluation scores the exact top-k among the documents the filter matches. The reference
is built by brute force: the full, unfiltered ranking of every live document (k = the number of
documents) restricted to the matching ones and cut to k, scored with ir-measures (the product
scores with pytrec_eval). The TREC run ``braid eval`` writes must be that run, hit for hit, and its
metrics must be ir-measures' over it.
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
torch.set_num_threads(1)
ir_measures = pytest.importorskip("ir_measures")

sys.path.insert(0, str(Path(__file__).parent))
from test_live import QUERIES, build, make_doc, write_corpus  # noqa: E402
from test_sharded import make_tiny_bert  # noqa: E402

K = 10
FILTER = "year >= 2000 and lang in (en, de)"
# our metric name -> ir-measures measure
METRICS = {"ndcg@10": "nDCG@10", "recall@10": "R@10", "p@5": "P@5", "map": "AP", "mrr@10": "RR@10"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A BEIR folder and its live index under ``index_root/NAME``: built, then 12 documents added
    (2 of them updates) and 5 deleted, so the filter crosses segments and a deletion bitmap."""
    from braid.retrieval.live import Index

    root = tmp_path_factory.mktemp("live-eval")
    models = {"sparse": make_tiny_bert(root / "tiny-splade", mlm=True), "dense": make_tiny_bert(root / "tiny-dense", mlm=False, seed=1)}
    rng = random.Random(21)
    docs = [make_doc(rng, f"d{i}") for i in range(50)]
    ds = root / "data" / "livefilt"
    write_corpus(ds / "corpus.jsonl", docs)
    queries = {f"q{j}": q for j, q in enumerate(QUERIES)}
    write_corpus(ds / "queries.jsonl", [{"_id": q, "text": t} for q, t in queries.items()])
    (ds / "qrels").mkdir()
    all_ids = [f"d{i}" for i in range(50)] + [f"n{i}" for i in range(10)]
    lines = ["query-id\tcorpus-id\tscore"]
    for q in queries:  # relevant documents inside and outside the filter, some deleted, graded
        for d in rng.sample(all_ids, 8):
            lines.append(f"{q}\t{d}\t{rng.choice([1, 1, 2])}")
    (ds / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")

    index_root = root / "indexes"
    index_dir = build(models, docs, index_root / "livefilt")
    index = Index(index_dir, batch_size=1, log=lambda m: None)
    index.add([make_doc(rng, f"n{i}") for i in range(10)] + [make_doc(rng, "d3"), make_doc(rng, "d4")])
    index.delete(["d1", "d9", "n2", "d30", "d44"])
    return {"dir": ds, "index_root": index_root, "index_dir": index_dir, "queries": queries}


def _qrels(path: Path) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for line in path.read_text().splitlines()[1:]:
        q, d, s = line.split("\t")
        out.setdefault(q, {})[d] = int(s)
    return out


def _read_trec(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[tuple[int, str]]] = {}
    for line in path.read_text().splitlines():
        q, _, d, rank, _, _ = line.split()
        out.setdefault(q, []).append((int(rank), d))
    return {q: [d for _, d in sorted(v)] for q, v in out.items()}


@pytest.mark.parametrize("name", ["bm25", "sparse", "dense"])
def test_eval_filter_scores_the_exact_top_k_of_the_matching_documents(dataset, name, tmp_path):
    from click.testing import CliRunner

    from braid.cli.main import main
    from braid.data.filters import parse_filter
    from braid.retrieval.searcher import Searcher

    # brute force: every live document ranked without the filter, then restricted to the matches
    s = Searcher(dataset["index_dir"])
    mask = s.context.filter_mask(parse_filter(FILTER))
    matching = {s.doc_ids[d] for d in np.flatnonzero(mask)}
    assert 0 < len(matching) < s.num_docs - 10  # the filter matters at k = 10
    knobs = {"exact": True} if name == "sparse" else {}
    qids = list(dataset["queries"])
    full = s.batch_search([dataset["queries"][q] for q in qids], k=s.num_docs, retriever=name, **knobs)
    want_run = {}
    for q, ids, scores in zip(qids, full.doc_ids, full.hits.scores):
        kept = [(d, float(sc)) for d, sc in zip(ids, scores) if d in matching][:K]
        want_run[q] = kept
    assert all(len(v) == K for v in want_run.values())

    runs = tmp_path / "runs"
    args = ["eval", str(dataset["dir"]), "--index-root", str(dataset["index_root"]), "-r", name, "-k", str(K),
            "--metrics", ",".join(METRICS), "--filter", FILTER, "--runs-dir", str(runs), "--json", "-q"]  # fmt: skip
    if name == "sparse":
        args.append("--exact")
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)["livefilt"]

    trec = next((runs / "livefilt").glob("*.test.trec"))
    assert _read_trec(trec) == {q: [d for d, _ in v] for q, v in want_run.items()}

    # ir-measures over the brute-force run; a judged query without hits would count 0 (none here)
    qrels = _qrels(dataset["dir"] / "qrels" / "test.tsv")
    measures = [ir_measures.parse_measure(m) for m in METRICS.values()]
    run = {q: {d: sc for d, sc in v} for q, v in want_run.items()}
    want = ir_measures.calc_aggregate(measures, qrels, run)
    for ours, theirs in METRICS.items():
        assert got[ours] == pytest.approx(want[ir_measures.parse_measure(theirs)], abs=1e-9), ours

    # and the filter changed the answer: the unfiltered evaluation differs
    args_plain = [a for a in args if a not in ("--filter", FILTER)]
    plain = json.loads(CliRunner().invoke(main, args_plain).output)["livefilt"]
    assert plain != got


def test_eval_filter_is_refused_with_a_clear_message(dataset):
    from click.testing import CliRunner

    from braid.cli.main import main

    base = ["eval", str(dataset["dir"]), "--index-root", str(dataset["index_root"]), "-r", "bm25", "-k", "5", "--runs-dir", str(dataset["dir"].parent / "runs-bad"), "-q"]
    res = CliRunner().invoke(main, base + ["--filter", "year >= "])
    assert res.exit_code == 2 and "--filter" in res.output
    res = CliRunner().invoke(main, base + ["--filter", "year >= abc"])
    assert res.exit_code != 0 and "holds numbers" in res.output
