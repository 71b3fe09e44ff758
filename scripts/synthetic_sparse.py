"""Seeded synthetic learned-sparse corpora whose statistics follow real splade-tiny vectors.

A blocked index is only as good as the clustering its posting lists allow, so a benchmark corpus needs
the topical structure of real text, not independent Zipf draws. This generator fits a two-level topic
mixture to real SPLADE vectors (by default scifact encoded with splade-tiny, ``../shared/vectors``):

* **background**: term document frequencies of the real corpus (+ a little mass on unseen terms);
* **topics**: a spherical k-means of the real documents (``--topics``, 64); topic term distribution
  = its documents' term frequencies, smoothed with the background;
* **fine topics** (``num_docs / docs_per_fine_topic`` of them): a parent topic plus a focus set of
  its discriminative terms (drawn by p_topic x lift^0.5), standing for a narrow subject;
* **weights**: per-term log-normal fitted on the real documents (queries: on the real queries),
  shrunk to the global fit for rare terms, with focus terms boosted (SPLADE puts its largest weights
  on a text's salient terms);
* **lengths**: nonzeros per document and per query drawn from the real distributions.

A document picks a fine topic, takes a binomial share of its focus set, and fills the rest of its
length from the parent topic (probability ``topic_share``) or the background; a query does the same
from its own fine topic with the query parameters. The mixing parameters below were calibrated so
that a 5,183-document synthetic corpus matches scifact on the statistics :func:`compare_stats`
reports (see docs/benchmarks/sparse.md).

Usage::

    python scripts/synthetic_sparse.py --num-docs 1000000 --num-queries 1000 --out .cache/synthetic-1m
    python scripts/synthetic_sparse.py --compare   # synthetic (scifact size) vs scifact statistics
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numba
import numpy as np
import scipy.sparse as sp
from numba import prange

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BRAID_SHARED", ROOT.parent / "shared"))
SCIFACT = SHARED / "vectors" / "scifact"


@dataclass(frozen=True)
class GeneratorParams:
    n_topics: int = 64
    docs_per_fine_topic: int = 30
    focus_size: int = 100  # terms in a fine topic's focus set
    doc_focus_share: float = 0.6  # binomial probability of each focus term in a document
    doc_topic_share: float = 0.6  # other terms: from the parent topic with this probability, else background
    doc_focus_bias: float = 2.0  # focus terms draw their weight quantile as u ** (1 / bias): heavier
    query_source_share: float = 0.2  # share of a query's terms taken from its source document
    query_focus_share: float = 0.15  # binomial probability of each focus term in a query
    query_topic_share: float = 0.5
    query_focus_bias: float = 1.2
    unseen_mass: float = 0.002  # background mass spread over terms the real corpus never uses
    seed: int = 0


# ----------------------------------------------------------------------------------------------
# fitting
# ----------------------------------------------------------------------------------------------
def load_real(split: str = "all") -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """scifact splade-tiny documents and queries (``split='test'``: the 300 test queries)."""
    docs = sp.load_npz(SCIFACT / "splade-tiny-docs.npz").tocsr()
    queries = sp.load_npz(SCIFACT / "splade-tiny-queries.npz").tocsr()
    if split == "test":
        ids = json.loads((SCIFACT / "ids.json").read_text())
        test = test_query_ids()
        rows = [i for i, q in enumerate(ids["query_ids"]) if q in test]
        queries = queries[rows]
    docs.sort_indices()
    queries.sort_indices()
    return docs, queries


def test_query_ids() -> set[str]:
    path = SHARED / "data" / "scifact" / "qrels" / "test.tsv"
    out = set()
    with open(path, encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            out.add(line.split("\t")[0])
    return out


def _weight_table(m: sp.csr_matrix, min_count: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-term sorted weights (CSR by term) and the pooled sorted weights (for terms seen < min_count times)."""
    csc = m.tocsc()
    csc.sort_indices()
    v = m.shape[1]
    ptr = csc.indptr.astype(np.int64)
    counts = np.diff(ptr)
    weights = csc.data.astype(np.float32).copy()
    for t in np.flatnonzero(counts >= 2):
        weights[ptr[t] : ptr[t + 1]].sort()
    rare = counts < min_count
    keep = np.repeat(~rare, counts)
    new_counts = np.where(rare, 0, counts)
    new_ptr = np.zeros(v + 1, np.int64)
    np.cumsum(new_counts, out=new_ptr[1:])
    return new_ptr, weights[keep], np.sort(m.data.astype(np.float32))


def _rates(frac: np.ndarray) -> np.ndarray:
    """Draw rates whose inclusion probability over a document's draws follows ``frac`` (df / N):
    -log(1 - frac), so a term in 93% of documents is not drawn like one in 40%."""
    return -np.log1p(-np.minimum(frac, 0.99))


def fit(docs: sp.csr_matrix, queries: sp.csr_matrix, params: GeneratorParams) -> dict[str, np.ndarray]:
    """Fit the model's arrays to real document and query vectors."""
    rng = np.random.default_rng(params.seed)
    n, v = docs.shape
    binary = docs.copy()
    binary.data[:] = 1.0
    df = np.asarray(binary.sum(axis=0)).ravel()
    seen = df > 0
    bg = _rates(df / n)
    bg = bg / bg.sum() * (1.0 - params.unseen_mass)
    if (~seen).any():
        bg[~seen] = params.unseen_mass / (~seen).sum()
    # spherical k-means on L2-normalised documents
    norms = np.sqrt(np.asarray(docs.multiply(docs).sum(axis=1)).ravel())
    x = sp.diags(1.0 / np.maximum(norms, 1e-12)) @ docs
    k = params.n_topics
    centroids = x[rng.choice(n, size=k, replace=False)].toarray()
    for _ in range(20):
        assign = np.asarray((x @ centroids.T).argmax(axis=1)).ravel()
        for c in range(k):
            members = assign == c
            if members.any():
                centroids[c] = np.asarray(x[members].sum(axis=0)).ravel()
            else:
                centroids[c] = x[rng.integers(n)].toarray().ravel()
            centroids[c] /= max(np.linalg.norm(centroids[c]), 1e-12)
    topic_p = np.zeros((k, v))
    for c in range(k):
        members = assign == c
        tdf = np.asarray(binary[members].sum(axis=0)).ravel()
        rates = _rates(tdf / max(members.sum(), 1))
        topic_p[c] = 0.9 * rates / max(rates.sum(), 1e-12) + 0.1 * bg
    topic_sizes = np.bincount(assign, minlength=k).astype(np.float64)
    w_ptr, w_sorted, w_pool = _weight_table(docs)
    qw_ptr, qw_sorted, qw_pool = _weight_table(queries)
    return {
        "background": bg,
        "topic_p": topic_p,
        "topic_weight": topic_sizes / topic_sizes.sum(),
        "doc_w_ptr": w_ptr,
        "doc_w_sorted": w_sorted,
        "doc_w_pool": w_pool,
        "query_w_ptr": qw_ptr,
        "query_w_sorted": qw_sorted,
        "query_w_pool": qw_pool,
        "doc_nnz": np.diff(docs.indptr).astype(np.int64),
        "query_nnz": np.diff(queries.indptr).astype(np.int64),
    }


# ----------------------------------------------------------------------------------------------
# generation
# ----------------------------------------------------------------------------------------------
def _cdf(p: np.ndarray) -> np.ndarray:
    c = np.cumsum(p, axis=-1)
    return c / c[..., -1:]


def fine_topics(model: dict, n_fine: int, params: GeneratorParams, rng: np.random.Generator):
    """Parent topic and focus-term set of each fine topic: (parents (n_fine,), focus (n_fine, focus_size))."""
    k = model["topic_p"].shape[0]
    parents = rng.choice(k, size=n_fine, p=model["topic_weight"])
    lift = model["topic_p"] / np.maximum(model["background"], 1e-12)
    sel = model["topic_p"] * np.sqrt(lift)
    sel /= sel.sum(axis=1, keepdims=True)
    focus = np.empty((n_fine, params.focus_size), np.int32)
    for c in range(k):
        rows = np.flatnonzero(parents == c)
        nz = np.flatnonzero(sel[c] > 0)
        size = min(params.focus_size, nz.size)
        for r in rows:
            focus[r, :size] = rng.choice(nz, size=size, replace=False, p=sel[c, nz] / sel[c, nz].sum())
    return parents.astype(np.int32), focus


@numba.njit(cache=True)
def _quantile_weight(t, u, w_ptr, w_sorted, pool):
    n = w_ptr[t + 1] - w_ptr[t]
    if n > 0:
        arr = w_sorted[w_ptr[t] : w_ptr[t + 1]]
    else:
        arr = pool
        n = pool.shape[0]
    x = u * (n - 1)
    i = int(x)
    if i >= n - 1:
        return arr[n - 1]
    f = x - i
    return arr[i] * (1.0 - f) + arr[i + 1] * f


@numba.njit(cache=True)
def _draw(cdf):
    u = np.random.random() * cdf[cdf.shape[0] - 1]
    t = np.searchsorted(cdf, u, side="right")
    return min(t, cdf.shape[0] - 1)


@numba.njit(cache=True)
def _complete_row(start, m, got, stamp, f, parent, focus, focus_share, topic_share, focus_bias, topic_cdf, bg_cdf,
                  w_ptr, w_sorted, w_pool, mark, salient, out_terms, out_weights):  # fmt: skip
    """Fill row ``start:start+m`` (``got`` terms already chosen): a binomial share of fine topic ``f``'s
    focus terms (marked salient), the rest from the parent topic (``topic_share``) or the background;
    then sort the terms and draw their weights (salient terms heavier). ``mark``/``stamp`` prevent
    repeats; ``salient`` is left all-False."""
    for j in range(focus.shape[1]):
        if got >= m:
            break
        t = focus[f, j]
        if np.random.random() < focus_share and mark[t] != stamp:
            mark[t] = stamp
            salient[t] = True
            out_terms[start + got] = t
            got += 1
    while got < m:
        if np.random.random() < topic_share:
            t = _draw(topic_cdf[parent])
        else:
            t = _draw(bg_cdf)
        if mark[t] == stamp:
            continue
        mark[t] = stamp
        out_terms[start + got] = t
        got += 1
    row = out_terms[start : start + m]
    row.sort()
    for j in range(m):
        t = row[j]
        u = np.random.random()
        if salient[t]:
            u = u ** (1.0 / focus_bias)
            salient[t] = False
        out_weights[start + j] = _quantile_weight(t, u, w_ptr, w_sorted, w_pool)


@numba.njit(parallel=True, cache=True)
def _fill_docs(seed, n_chunks, out_ptr, row_topic, parents, focus, topic_cdf, bg_cdf, w_ptr, w_sorted, w_pool,
               focus_share, topic_share, focus_bias, out_terms, out_weights):  # fmt: skip
    n_rows = out_ptr.shape[0] - 1
    v = bg_cdf.shape[0]
    for c in prange(n_chunks):
        np.random.seed(seed * 1000003 + c)
        lo = c * n_rows // n_chunks
        hi = (c + 1) * n_rows // n_chunks
        mark = np.zeros(v, np.int64)
        is_focus = np.zeros(v, np.bool_)
        for r in range(lo, hi):
            start = out_ptr[r]
            f = row_topic[r]
            _complete_row(start, out_ptr[r + 1] - start, 0, r + 1, f, parents[f], focus, focus_share, topic_share,
                          focus_bias, topic_cdf, bg_cdf, w_ptr, w_sorted, w_pool, mark, is_focus, out_terms, out_weights)  # fmt: skip


@numba.njit(parallel=True, cache=True)
def _fill_queries(seed, n_chunks, out_ptr, source, doc_ptr, doc_terms, doc_weights, doc_topic, parents, focus,
                  topic_cdf, bg_cdf, w_ptr, w_sorted, w_pool, source_share, focus_share, topic_share, focus_bias,
                  out_terms, out_weights):  # fmt: skip
    n_rows = out_ptr.shape[0] - 1
    v = bg_cdf.shape[0]
    for c in prange(n_chunks):
        np.random.seed(seed * 1000003 + c)
        lo = c * n_rows // n_chunks
        hi = (c + 1) * n_rows // n_chunks
        mark = np.zeros(v, np.int64)
        salient = np.zeros(v, np.bool_)
        for r in range(lo, hi):
            stamp = r + 1
            start = out_ptr[r]
            m = out_ptr[r + 1] - start
            d = source[r]
            f = doc_topic[d]
            got = 0
            # terms of the source document, drawn by squared weight (its salient terms)
            ds, de = doc_ptr[d], doc_ptr[d + 1]
            cdf = np.cumsum(doc_weights[ds:de].astype(np.float64) ** 2)
            n_src = min(int(source_share * m + 0.5), de - ds)
            tries = 0
            while got < n_src and tries < 50 * m:
                tries += 1
                t = doc_terms[ds + _draw(cdf)]
                if mark[t] == stamp:
                    continue
                mark[t] = stamp
                salient[t] = True
                out_terms[start + got] = t
                got += 1
            _complete_row(start, m, got, stamp, f, parents[f], focus, focus_share, topic_share, focus_bias,
                          topic_cdf, bg_cdf, w_ptr, w_sorted, w_pool, mark, salient, out_terms, out_weights)  # fmt: skip


def generate(model: dict, num_docs: int, num_queries: int, params: GeneratorParams = GeneratorParams(),
             threads: int | None = None) -> tuple[sp.csr_matrix, sp.csr_matrix, dict]:  # fmt: skip
    """Documents (num_docs x V) and queries (num_queries x V) as float32 CSR matrices, plus metadata
    (``query_source``: the document each query was drawn from)."""
    if threads:
        numba.set_num_threads(threads)
    rng = np.random.default_rng(params.seed + 1)
    v = model["background"].shape[0]
    n_fine = max(1, num_docs // params.docs_per_fine_topic)
    parents, focus = fine_topics(model, n_fine, params, rng)
    topic_cdf = _cdf(model["topic_p"])
    bg_cdf = _cdf(model["background"])

    doc_topic = rng.integers(0, n_fine, size=num_docs).astype(np.int32)
    doc_ptr = np.zeros(num_docs + 1, np.int64)
    np.cumsum(rng.choice(model["doc_nnz"], size=num_docs), out=doc_ptr[1:])
    doc_terms = np.empty(int(doc_ptr[-1]), np.int32)
    doc_weights = np.empty(int(doc_ptr[-1]), np.float32)
    _fill_docs(params.seed * 2, max(1, min(num_docs, 64)), doc_ptr, doc_topic, parents, focus, topic_cdf, bg_cdf,
               model["doc_w_ptr"], model["doc_w_sorted"], model["doc_w_pool"],
               params.doc_focus_share, params.doc_topic_share, params.doc_focus_bias, doc_terms, doc_weights)  # fmt: skip

    source = rng.integers(0, num_docs, size=num_queries)
    q_ptr = np.zeros(num_queries + 1, np.int64)
    np.cumsum(rng.choice(model["query_nnz"], size=num_queries), out=q_ptr[1:])
    q_terms = np.empty(int(q_ptr[-1]), np.int32)
    q_weights = np.empty(int(q_ptr[-1]), np.float32)
    _fill_queries(params.seed * 2 + 1, max(1, min(num_queries, 64)), q_ptr, source, doc_ptr, doc_terms, doc_weights,
                  doc_topic, parents, focus, topic_cdf, bg_cdf,
                  model["query_w_ptr"], model["query_w_sorted"], model["query_w_pool"],
                  params.query_source_share, params.query_focus_share, params.query_topic_share, params.query_focus_bias,
                  q_terms, q_weights)  # fmt: skip
    docs = sp.csr_matrix((doc_weights, doc_terms, doc_ptr), shape=(num_docs, v))
    queries = sp.csr_matrix((q_weights, q_terms, q_ptr), shape=(num_queries, v))
    docs.has_sorted_indices = True
    queries.has_sorted_indices = True
    meta = {"params": asdict(params), "num_fine_topics": n_fine, "query_source": source, "doc_fine_topic": doc_topic}
    return docs, queries, meta


# ----------------------------------------------------------------------------------------------
# statistics
# ----------------------------------------------------------------------------------------------
def _quantiles(x, qs=(5, 25, 50, 75, 95)):
    return [round(float(v), 4) for v in np.percentile(x, qs)]


def compare_stats(docs: sp.csr_matrix, queries: sp.csr_matrix, sample: int = 20000, seed: int = 0) -> dict:
    """Statistics that decide how well a blocked index can prune: lengths, weights, document frequency
    curve, term co-occurrence (lift of frequent-term pairs), nearest-neighbour similarity and the
    shape of exact top-k scores."""
    rng = np.random.default_rng(seed)
    n = docs.shape[0]
    rows = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    d = docs[rows]
    binary = d.copy()
    binary.data[:] = 1.0
    df = np.asarray(binary.sum(axis=0)).ravel()
    df_sorted = np.sort(df)[::-1] / d.shape[0]
    top = np.argsort(-df)[200:1200]  # mid-frequency terms carry the topical structure
    b = binary[:, top].tocsc().astype(np.float64)
    co = (b.T @ b).toarray()
    dfs = np.diag(co).copy()
    lift = co * d.shape[0] / np.maximum(np.outer(dfs, dfs), 1)
    iu = np.triu_indices_from(lift, k=1)
    pair_lift = lift[iu][co[iu] > 0]
    # nearest-neighbour cosine of 200 sampled docs within the sample
    norms = np.sqrt(np.asarray(d.multiply(d).sum(axis=1)).ravel())
    x = sp.diags(1.0 / np.maximum(norms, 1e-12)) @ d
    probe = rng.choice(x.shape[0], size=min(200, x.shape[0]), replace=False)
    sims = (x[probe] @ x.T).toarray()
    sims[np.arange(probe.size), probe] = -1
    nn = sims.max(axis=1)
    # exact score profile of the queries against all documents
    q = queries[: min(300, queries.shape[0])]
    scores = (q @ docs.T).toarray() if docs.shape[0] <= 50000 else _chunked_scores(q, docs)
    top_scores = -np.sort(-scores, axis=1)[:, :100]
    r1_10 = top_scores[:, 0] / np.maximum(top_scores[:, 9], 1e-9)
    r10_100 = top_scores[:, 9] / np.maximum(top_scores[:, 99], 1e-9)
    return {
        "num_docs": int(n),
        "doc_nnz_q": _quantiles(np.diff(docs.indptr)),
        "query_nnz_q": _quantiles(np.diff(queries.indptr)),
        "doc_weight_q": _quantiles(docs.data[: 5_000_000]),
        "query_weight_q": _quantiles(queries.data),
        "terms_used_frac": round(float((df > 0).mean()), 4),
        "df_at_rank_1_10_100_1000_5000": [round(float(df_sorted[i]), 5) for i in (0, 9, 99, 999, 4999)],
        "mid1000_pair_log_lift_mean": round(float(np.log(pair_lift).mean()), 4),
        "mid1000_pairs_lift_gt2_frac": round(float((pair_lift > 2).mean()), 4),
        "nn_cosine_q": _quantiles(nn),
        "top1_over_top10_q": _quantiles(r1_10),
        "top10_over_top100_q": _quantiles(r10_100),
    }


def _chunked_scores(q: sp.csr_matrix, docs: sp.csr_matrix) -> np.ndarray:
    out = np.empty((q.shape[0], docs.shape[0]), np.float32)
    step = 50_000
    for lo in range(0, docs.shape[0], step):
        out[:, lo : lo + step] = (q @ docs[lo : lo + step].T).toarray()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--num-docs", type=int, default=1_000_000)
    ap.add_argument("--num-queries", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, help="write docs.npz, queries.npz and meta.json here")
    ap.add_argument("--compare", action="store_true", help="print synthetic (scifact-sized) vs scifact statistics")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="override a GeneratorParams field")
    args = ap.parse_args(argv)
    overrides = {}
    for item in args.param:
        name, _, value = item.partition("=")
        field_type = type(getattr(GeneratorParams(), name))
        overrides[name] = field_type(value)
    params = GeneratorParams(seed=args.seed, **overrides)
    real_docs, real_queries = load_real()
    t0 = time.time()
    model = fit(real_docs, real_queries, params)
    print(f"fitted in {time.time() - t0:.1f}s", file=sys.stderr)
    if args.compare:
        _, test_queries = load_real("test")
        docs, queries, _ = generate(model, real_docs.shape[0], 300, params, args.threads)
        report = {"scifact": compare_stats(real_docs, test_queries), "synthetic": compare_stats(docs, queries)}
        for key in report["scifact"]:
            print(f"{key:34s} {report['scifact'][key]} | {report['synthetic'][key]}")
        return 0
    t0 = time.time()
    docs, queries, meta = generate(model, args.num_docs, args.num_queries, params, args.threads)
    print(f"generated {docs.shape[0]} docs / {queries.shape[0]} queries in {time.time() - t0:.1f}s", file=sys.stderr)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        sp.save_npz(args.out / "docs.npz", docs, compressed=False)
        sp.save_npz(args.out / "queries.npz", queries, compressed=False)
        meta = {k: (v.tolist() if k == "query_source" else v) for k, v in meta.items() if k != "doc_fine_topic"}
        (args.out / "meta.json").write_text(json.dumps(meta, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
