"""Result fusion: pure functions over :class:`braid.index.hits.Hits`, one registry, one entry point.

``fuse(runs, method, k, weights, **params)`` looks the method up in :data:`FUSION_METHODS` and returns
the fused top ``k`` as a new ``Hits``, rows ordered by (-score, docno) (ties by the float32 score
that is returned). Every method takes any number of lists over the same queries, optional
per-list ``weights`` (default 1.0 each) and a per-list candidate ``depth`` (an int for all lists or
one per list; only the top ``depth`` entries of a list take part, in normalisation too).

Methods
-------
``linear`` / ``combsum``
    ``sum_r w_r * norm_r(d)``: linear interpolation of normalised scores (Pyserini's hybrid
    ``alpha * sparse + dense`` is ``weights=[alpha, 1]``); CombSUM (Fox & Shaw, TREC-2 1993) is the
    same sum under its literature name. Default ``norm="minmax"``.
``combmnz``
    CombSUM times the number of lists that hold the document (Fox & Shaw 1993).
``combmax``
    ``max_r w_r * norm_r(d)`` over the lists that hold the document (missing lists are ignored).
``rrf``
    Reciprocal rank fusion (Cormack, Clarke & Buettcher, SIGIR 2009): ``sum_r w_r / (rrf_k + rank_r(d))``
    with 1-based ranks within the top ``depth`` of each list, ``rrf_k=60``. A list that does not hold
    the document contributes 0; scores are not normalised.

Normalisation (``norm``), per query over the valid top-``depth`` entries of each list, exactly as ranx
0.3.21 does it (``ranx.normalization``): ``"minmax"`` ``(s - min) / max(max - min, 1e-9)`` (ranx
"min-max"); ``"zscore"`` ``(s - mean) / max(std, 1e-9)``, population std (ranx "zmuv"); ``"max"``
``s / max(max, 1e-9)``; ``"sum"`` ``(s - min) / max(sum(s) - n * min, 1e-9)``; ``"none"``.

Missing documents (``missing``, score-based methods except ``combmax``): a document in the union that
one list does not hold gets, for that list, either ``"min"`` (default) the list's minimum normalised
score in this query -- the choice of Pyserini's ``HybridSearcher``, which fills the absent side with
the list's minimum -- or ``"zero"``: 0, which is what ranx does (its missing documents count 0 after
normalisation). After ``minmax`` both give 0; they differ for ``zscore``, ``none`` and ``max``.
For ``combmnz`` the multiplier always counts only the lists that hold the document.

Self-hits: :func:`drop_docnos` removes the hit whose docno is the query's own docno (BEIR's
``--remove-query`` convention); call it on every list *before* fusing so a self-hit never sets a
list's normalisation.

The combination runs in one numba kernel over the whole batch (:mod:`braid.retrieval.pipeline.fusion_kernels`);
normalisation is vectorised numpy over the batch.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from braid.data.errors import DataError, OptionError, check_finite, check_positive_int
from braid.index.hits import PAD_DOCNO, Hits, drop_docnos  # noqa: F401 (part of this module's API)
from braid.data.lazy import LazyModule, tier0
from braid.retrieval.pipeline import fusion_numpy
from braid.retrieval.pipeline.fusion_numpy import MODE_MAX, MODE_MNZ, MODE_SUM

# the numba kernels, imported on first use; a process's first single queries fuse on the numpy tier
K = LazyModule("braid.retrieval.pipeline.fusion_kernels", globals(), "K")

__all__ = [
    "FUSION_METHODS",
    "NORMALIZATIONS",
    "MISSING",
    "fuse",
    "linear",
    "combsum",
    "combmnz",
    "combmax",
    "rrf",
    "drop_docnos",
    "normalize_scores",
    "FusionExplanation",
    "explain",
]

_EPS = 1e-9  # ranx's floor on every normalisation denominator
_PARALLEL_MIN_QUERIES = 16  # smaller batches run the serial kernel (no thread-pool start-up)


# --------------------------------------------------------------------------------------------------
# Normalisations: (scores float64 (n, depth) with 0 on padding, valid bool (n, depth)) -> float64 (n, depth)
# --------------------------------------------------------------------------------------------------


def _row_min_max(scores: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    has = valid.any(axis=1)
    lo = np.where(valid, scores, np.inf).min(axis=1, initial=np.inf)
    hi = np.where(valid, scores, -np.inf).max(axis=1, initial=-np.inf)
    return np.where(has, lo, 0.0), np.where(has, hi, 0.0)


def _norm_minmax(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    lo, hi = _row_min_max(scores, valid)
    return (scores - lo[:, None]) / np.maximum(hi - lo, _EPS)[:, None]


def _norm_zscore(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    n = np.maximum(valid.sum(axis=1), 1)
    mean = np.where(valid, scores, 0.0).sum(axis=1) / n
    var = np.where(valid, (scores - mean[:, None]) ** 2, 0.0).sum(axis=1) / n
    return (scores - mean[:, None]) / np.maximum(np.sqrt(var), _EPS)[:, None]


def _norm_max(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    _, hi = _row_min_max(scores, valid)
    return scores / np.maximum(hi, _EPS)[:, None]


def _norm_sum(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    lo, _ = _row_min_max(scores, valid)
    total = np.where(valid, scores, 0.0).sum(axis=1)
    denom = np.maximum(total - lo * valid.sum(axis=1), _EPS)
    return (scores - lo[:, None]) / denom[:, None]


def _norm_none(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    return scores


NORMALIZATIONS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "minmax": _norm_minmax,
    "zscore": _norm_zscore,
    "max": _norm_max,
    "sum": _norm_sum,
    "none": _norm_none,
}


def _fill_min(normed: np.ndarray, valid: np.ndarray) -> np.ndarray:
    lo, _ = _row_min_max(normed, valid)
    return lo


def _fill_zero(normed: np.ndarray, valid: np.ndarray) -> np.ndarray:
    return np.zeros(normed.shape[0], dtype=np.float64)


MISSING: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {"min": _fill_min, "zero": _fill_zero}


# --------------------------------------------------------------------------------------------------
# Validation and preparation
# --------------------------------------------------------------------------------------------------


def _check_runs(runs: Sequence[Hits]) -> list[Hits]:
    if isinstance(runs, Hits) or not isinstance(runs, (list, tuple)) or len(runs) == 0:
        raise OptionError("runs", type(runs).__name__, "a non-empty list of Hits")
    for i, h in enumerate(runs):
        if not isinstance(h, Hits):
            raise OptionError(f"runs[{i}]", type(h).__name__, "a braid.index.hits.Hits")
    n = runs[0].n_queries
    for i, h in enumerate(runs):
        if h.n_queries != n:
            raise OptionError(
                f"runs[{i}]", f"{h.n_queries} queries", f"every list must cover the same {n} queries in the same order"
            )
    return list(runs)


def _check_k(k: object) -> int:
    return check_positive_int("k", k)


def _check_weights(weights: Sequence[float] | None, n_runs: int) -> np.ndarray:
    if weights is None:
        return np.ones(n_runs, dtype=np.float64)
    try:
        w = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError):
        raise OptionError("weights", weights, f"a list of {n_runs} finite numbers") from None
    if w.shape != (n_runs,) or not np.all(np.isfinite(w)):
        raise OptionError("weights", weights, f"a list of {n_runs} finite numbers, one per list")
    return w


def _check_depth(depth: int | Sequence[int] | None, runs: list[Hits]) -> list[int]:
    if depth is None:
        return [h.k for h in runs]
    items = [depth] * len(runs) if isinstance(depth, (int, np.integer)) and not isinstance(depth, bool) else depth
    if not isinstance(items, (list, tuple)) or len(items) != len(runs):
        raise OptionError("depth", depth, f"None, a positive integer, or a list of {len(runs)} positive integers")
    out = []
    for d, h in zip(items, runs):
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
            raise OptionError("depth", depth, "positive integers")
        out.append(min(int(d), h.k))
    return out


def _check_choice(name: str, value: object, table: dict) -> Callable:
    if not isinstance(value, str) or value not in table:
        raise OptionError(name, value, "one of " + ", ".join(repr(x) for x in table))
    return table[value]


def _truncated(runs: list[Hits], depths: list[int]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per list: docnos int64 (n, depth_r), scores float64 (n, depth_r) with 0 on padding, valid (n, depth_r)."""
    out = []
    for i, (h, d) in enumerate(zip(runs, depths)):
        docnos = np.ascontiguousarray(h.docnos[:, :d], dtype=np.int64)
        valid = docnos >= 0
        scores = np.where(valid, h.scores[:, :d], 0.0).astype(np.float64)
        if not np.all(np.isfinite(scores)):
            raise DataError(f"runs[{i}] has a NaN or infinite score on a valid (docno >= 0) entry")
        out.append((docnos, scores, valid))
    return out


def _combine(parts: list[tuple[np.ndarray, np.ndarray]], base: np.ndarray, mode: int, k: int) -> Hits:
    """Stack per-list (docnos (n, d_r), values (n, d_r)) and run the kernel."""
    n = base.shape[0]
    depth = max(d.shape[1] for d, _ in parts)
    docnos = np.full((len(parts), n, depth), PAD_DOCNO, dtype=np.int64)
    values = np.zeros((len(parts), n, depth), dtype=np.float64)
    for r, (d, v) in enumerate(parts):
        docnos[r, :, : d.shape[1]] = d
        values[r, :, : v.shape[1]] = v
    if depth and int(docnos.max()) >= 2**32:
        raise DataError(f"docno {int(docnos.max())} is too large: fusion supports docnos below 2**32")
    if n == 1 and tier0("braid.retrieval.pipeline.fusion_kernels"):
        kernel = fusion_numpy.fuse_contributions
    else:
        kernel = K.fuse_contributions if n >= _PARALLEL_MIN_QUERIES else K.fuse_contributions_serial
    out_docnos, out_scores, duplicates = kernel(docnos, values, base, mode, k)
    if duplicates.any():
        q = int(np.flatnonzero(duplicates)[0])
        raise DataError(f"query row {q}: a list holds the same docno twice; each list must hold a docno at most once")
    return Hits(out_docnos, out_scores)


def _score_fusion(
    runs: Sequence[Hits],
    k: int,
    weights: Sequence[float] | None,
    depth: int | Sequence[int] | None,
    norm: str,
    missing: str,
    mode: int,
) -> Hits:
    runs = _check_runs(runs)
    k = _check_k(k)
    w = _check_weights(weights, len(runs))
    depths = _check_depth(depth, runs)
    norm_fn = _check_choice("norm", norm, NORMALIZATIONS)
    fill_fn = _check_choice("missing", missing, MISSING)
    base = np.zeros(runs[0].n_queries, dtype=np.float64)
    parts = []
    for r, (docnos, scores, valid) in enumerate(_truncated(runs, depths)):
        normed = norm_fn(scores, valid)
        if mode == MODE_MAX:
            parts.append((docnos, w[r] * normed))
            continue
        # A document absent from list r scores fill_r there: fold sum_r w_r * fill_r into one base per
        # query and give present entries w_r * (s - fill_r), so the kernel only sums what is present.
        fill = fill_fn(normed, valid)
        base += w[r] * fill
        parts.append((docnos, w[r] * (normed - fill[:, None])))
    return _combine(parts, base, mode, k)


# --------------------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------------------


def linear(
    runs: Sequence[Hits],
    k: int,
    weights: Sequence[float] | None = None,
    *,
    depth: int | Sequence[int] | None = None,
    norm: str = "minmax",
    missing: str = "min",
) -> Hits:
    """Linear interpolation ``sum_r weights[r] * norm_r(doc)`` over the union of the lists' top ``depth``.

    Args:
        runs: ``n_runs >= 1`` Hits over the same ``n_queries`` queries (any ``k`` each).
        k: results kept per query.
        weights: ``n_runs`` finite floats (default 1.0 each).
        depth: candidates taken from each list: None (all), an int, or one int per list.
        norm: ``"minmax"`` | ``"zscore"`` | ``"max"`` | ``"sum"`` | ``"none"`` (module docstring).
        missing: ``"min"`` (the list's minimum normalised score, Pyserini) | ``"zero"`` (ranx).

    Returns:
        Hits (n_queries, k): docnos int64, fused scores float32, rows by (-score, docno).
    """
    return _score_fusion(runs, k, weights, depth, norm, missing, MODE_SUM)


def combsum(
    runs: Sequence[Hits],
    k: int,
    weights: Sequence[float] | None = None,
    *,
    depth: int | Sequence[int] | None = None,
    norm: str = "minmax",
    missing: str = "min",
) -> Hits:
    """CombSUM (Fox & Shaw 1993): the sum of normalised scores; the same computation as :func:`linear`."""
    return _score_fusion(runs, k, weights, depth, norm, missing, MODE_SUM)


def combmnz(
    runs: Sequence[Hits],
    k: int,
    weights: Sequence[float] | None = None,
    *,
    depth: int | Sequence[int] | None = None,
    norm: str = "minmax",
    missing: str = "min",
) -> Hits:
    """CombMNZ (Fox & Shaw 1993): CombSUM times the number of lists that hold the document.

    Missing lists add their fill (``missing``) to the sum but never count in the multiplier; with
    ``missing="zero"`` and no weights this is ranx's ``comb_mnz``. Weights scale each list's
    normalised score (``count * sum_r w_r * s_r``); ranx's ``wmnz`` is a different definition
    (``sum_r s_r * sum_r w_r`` over the holding lists).
    """
    return _score_fusion(runs, k, weights, depth, norm, missing, MODE_MNZ)


def combmax(
    runs: Sequence[Hits],
    k: int,
    weights: Sequence[float] | None = None,
    *,
    depth: int | Sequence[int] | None = None,
    norm: str = "minmax",
) -> Hits:
    """CombMAX (Fox & Shaw 1993): ``max_r weights[r] * norm_r(doc)`` over the lists that hold the doc."""
    return _score_fusion(runs, k, weights, depth, norm, "zero", MODE_MAX)


def rrf(
    runs: Sequence[Hits],
    k: int,
    weights: Sequence[float] | None = None,
    *,
    depth: int | Sequence[int] | None = None,
    rrf_k: float = 60,
) -> Hits:
    """Reciprocal rank fusion (Cormack et al., SIGIR 2009): ``sum_r weights[r] / (rrf_k + rank_r(doc))``.

    ``rank_r`` is the 1-based position among the valid entries of list ``r`` (rows are already in
    (-score, docno) order, so score ties are ranked by docno). A list that does not hold the document
    contributes 0.
    """
    runs = _check_runs(runs)
    k = _check_k(k)
    w = _check_weights(weights, len(runs))
    depths = _check_depth(depth, runs)
    check_finite("rrf_k", rrf_k, low=0)
    parts = []
    for r, (docnos, _, valid) in enumerate(_truncated(runs, depths)):
        ranks = np.cumsum(valid, axis=1)
        parts.append((docnos, np.where(valid, w[r] / (float(rrf_k) + ranks), 0.0)))
    return _combine(parts, np.zeros(runs[0].n_queries, dtype=np.float64), MODE_SUM, k)


FUSION_METHODS: dict[str, Callable[..., Hits]] = {
    "linear": linear,
    "combsum": combsum,
    "combmnz": combmnz,
    "combmax": combmax,
    "rrf": rrf,
}


def fuse(runs: list[Hits], method: str, k: int, weights: list[float] | None = None, **params) -> Hits:
    """Fuse ``runs`` with ``FUSION_METHODS[method]``; ``params`` are that method's keyword options.

    Options: ``depth`` (all methods); ``norm`` (all but ``rrf``); ``missing`` (``linear``, ``combsum``,
    ``combmnz``); ``rrf_k`` (``rrf``). See the module docstring for the semantics.

    Returns:
        Hits (n_queries, k), docnos int64 with -1 padding, scores float32 with -inf padding.
    """
    fn = _check_method(method, params)
    return fn(runs, k, weights, **params)


def _check_method(method: str, params: dict) -> Callable[..., Hits]:
    fn = _check_choice("method", method, FUSION_METHODS)
    allowed = [
        p.name for p in inspect.signature(fn).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    for name in params:
        if name not in allowed:
            raise OptionError(name, params[name], f"not an option of fusion method {method!r}; its options: {allowed}")
    return fn


# --------------------------------------------------------------------------------------------------
# Explanation: what each list gave a fused document
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FusionExplanation:
    """Per list ``r``, query ``q`` and explained document ``j`` (arrays of shape (n_runs, n_queries, m)):

    ``ranks``: int64, the 1-based rank in list r's top ``depth_r`` (the rank RRF uses), 0 when absent;
    ``scores``: float64, the list's own score, NaN when absent;
    ``normalized``: float64, the normalised score (``norm``; for RRF ``1 / (rrf_k + rank)``), NaN when absent;
    ``contributions``: float64, what list r adds to the fused score, absent lists included (their fill
    under ``missing``; 0 for ``rrf`` and ``combmax``);
    ``fills``: float64 (n_runs, n_queries), the normalised score an absent document is given (NaN when
    the method gives absent documents nothing);
    ``fused``: float64 (n_queries, m) = ``contributions.sum(axis=0)``, the fused score the method
    computes (the kernel's float32 score to float32 rounding), NaN on padding.
    """

    method: str
    params: dict
    weights: np.ndarray
    ranks: np.ndarray
    scores: np.ndarray
    normalized: np.ndarray
    contributions: np.ndarray
    fills: np.ndarray
    fused: np.ndarray


def explain(
    runs: Sequence[Hits],
    method: str,
    docnos: np.ndarray,
    weights: Sequence[float] | None = None,
    **params,
) -> FusionExplanation:
    """Decompose the fused scores of ``docnos`` (int64 (n_queries, m), -1 padding; usually the fused
    top k) into one contribution per list, for the same ``runs``, ``method``, ``weights`` and
    ``params`` that :func:`fuse` took. The decomposition is exact: for ``linear``/``combsum`` a list
    contributes ``w_r * norm_r(d)`` (its fill when it lacks d), for ``combmnz`` that times the number
    of lists holding d, for ``rrf`` ``w_r / (rrf_k + rank_r(d))``, for ``combmax`` the list that
    attains the maximum contributes it (the first such list) and the others 0.
    """
    _check_method(method, params)
    runs = _check_runs(runs)
    w = _check_weights(weights, len(runs))
    depths = _check_depth(params.get("depth"), runs)
    docnos = np.asarray(docnos, dtype=np.int64)
    if docnos.ndim != 2 or docnos.shape[0] != runs[0].n_queries:
        raise OptionError("docnos", getattr(docnos, "shape", None), f"an int array of shape ({runs[0].n_queries}, m)")
    n_runs, (n, m) = len(runs), docnos.shape
    norm = params.get("norm", "minmax")
    norm_fn = _check_choice("norm", norm, NORMALIZATIONS) if method != "rrf" else None
    fill_fn = _check_choice("missing", params.get("missing", "min"), MISSING) if method in ("linear", "combsum", "combmnz") else None
    rrf_k = float(params.get("rrf_k", 60))
    if method == "rrf":
        check_finite("rrf_k", rrf_k, low=0)
    ranks = np.zeros((n_runs, n, m), dtype=np.int64)
    scores = np.full((n_runs, n, m), np.nan)
    normalized = np.full((n_runs, n, m), np.nan)
    fills = np.full((n_runs, n), np.nan)
    wanted = docnos >= 0
    for r, (dn, sc, valid) in enumerate(_truncated(runs, depths)):
        rank_of = np.cumsum(valid, axis=1)
        normed = norm_fn(sc, valid) if norm_fn is not None else np.where(valid, 1.0 / (rrf_k + rank_of), 0.0)
        if fill_fn is not None:
            fills[r] = fill_fn(normed, valid)
        if dn.shape[1] == 0:
            continue
        for q in range(n):
            keys = np.where(valid[q], dn[q], np.iinfo(np.int64).max)
            order = np.argsort(keys, kind="stable")
            pos = order[np.minimum(np.searchsorted(keys[order], docnos[q]), len(order) - 1)]
            hit = wanted[q] & valid[q][pos] & (dn[q][pos] == docnos[q])
            ranks[r, q] = np.where(hit, rank_of[q][pos], 0)
            scores[r, q] = np.where(hit, sc[q][pos], np.nan)
            normalized[r, q] = np.where(hit, normed[q][pos], np.nan)
    present = ranks > 0
    weighted = w[:, None, None] * normalized
    if method in ("linear", "combsum", "combmnz"):
        contributions = np.where(present, weighted, w[:, None, None] * fills[:, :, None])
        if method == "combmnz":
            contributions = contributions * present.sum(axis=0)[None]
    elif method == "rrf":
        contributions = np.where(present, weighted, 0.0)
    else:  # combmax: the first list reaching the maximum holds all of it
        best = np.where(present, weighted, -np.inf)
        winner = np.argmax(best, axis=0)
        contributions = np.where((np.arange(n_runs)[:, None, None] == winner[None]) & present, weighted, 0.0)
    contributions = np.where(wanted[None], contributions, 0.0)
    fused = np.where(wanted, contributions.sum(axis=0), np.nan)
    return FusionExplanation(method, dict(params), w, ranks, scores, normalized, contributions, fills, fused)


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def normalize_scores(hits: Hits, norm: str = "minmax") -> np.ndarray:
    """Per-query normalised scores of ``hits``: float64 (n_queries, k), NaN on padding."""
    norm_fn = _check_choice("norm", norm, NORMALIZATIONS)
    ((_, scores, valid),) = _truncated([hits], [hits.k])
    return np.where(valid, norm_fn(scores, valid), np.nan)
