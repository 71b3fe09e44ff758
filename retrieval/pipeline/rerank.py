"""Reranking stages over :class:`braid.index.hits.Hits`: a cross-encoder, and a pure re-sort helper.

* :class:`CrossEncoderReranker` scores (query, document text) pairs with any Hugging Face
  sequence-classification model (``AutoModelForSequenceClassification``): one logit is the score; with
  two logits the score is the logit of the positive class (index 1), as for MS MARCO monoBERT-style
  models. Raw logits, no sigmoid (sentence-transformers' ``CrossEncoder.predict`` applies a sigmoid
  to single-logit models by default; the order is the same).
* :func:`rescore` re-sorts the top of each query with any ``scores_fn(query_index, docnos) -> scores``.

Both rerank the top ``top_n`` valid hits of each query, order them by (-new score, docno), and keep
the remaining hits below them in their original order; those get scores ``min(new top scores) - 1 -
j`` (``j = 0, 1, ...``) so every row stays ordered by (-score, docno), as Hits requires.

torch and transformers are imported inside the functions that need them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from braid.data.errors import BraidError, DataError, OptionError, check_positive_int
from braid.index.hits import Hits

__all__ = ["CrossEncoderReranker", "rescore", "interpolate_head", "RESCORE_STAGES", "RescoreStage"]


def _check_top_n(top_n: int | None, k: int) -> int:
    top_n = check_positive_int("top_n", top_n, allow_none=True)
    return k if top_n is None else min(top_n, k)


def _merge(candidates: Hits, top_n: int, new_scores: list[np.ndarray]) -> Hits:
    """Rows: the top ``top_n`` valid hits re-sorted by their new scores, then the rest in their old order.

    ``new_scores[i]``: float (m_i,) for the first ``m_i = min(top_n, valid hits of row i)`` hits.
    """
    out = Hits.empty(candidates.n_queries, candidates.k)
    for i in range(candidates.n_queries):
        docnos, _ = candidates.row(i)
        m = min(top_n, len(docnos))
        head, rest = docnos[:m], docnos[m:]
        s = np.asarray(new_scores[i], dtype=np.float32)
        if s.shape != (m,):
            raise DataError(f"query {i}: got {s.shape[0] if s.ndim == 1 else s.shape} scores for {m} candidates")
        if not np.all(np.isfinite(s)):
            raise DataError(f"query {i}: a new score is NaN or infinite")
        order = np.lexsort((head, -s))
        out.docnos[i, :m] = head[order]
        out.scores[i, :m] = s[order]
        if len(rest):
            floor = np.float64(s.min()) if m else 0.0
            out.docnos[i, m : m + len(rest)] = rest
            out.scores[i, m : m + len(rest)] = (floor - 1.0 - np.arange(len(rest))).astype(np.float32)
    return out


def rescore(
    candidates: Hits,
    scores_fn: Callable[[int, np.ndarray], np.ndarray],
    top_n: int | None = None,
) -> Hits:
    """Re-sort each query's top ``top_n`` hits (all when None) by ``scores_fn``; ties by docno.

    Args:
        candidates: Hits (n_queries, k).
        scores_fn: ``(query_index, docnos int64 (m,)) -> float (m,)``, the new scores of those hits.
        top_n: how many leading hits are rescored; the rest stay below in their order (module docstring).

    Returns:
        Hits (n_queries, k), scores float32.
    """
    if not isinstance(candidates, Hits):
        raise OptionError("candidates", type(candidates).__name__, "a braid.index.hits.Hits")
    top_n = _check_top_n(top_n, candidates.k)
    new = []
    for i in range(candidates.n_queries):
        head = candidates.row(i)[0][:top_n]
        new.append(np.asarray(scores_fn(i, head), dtype=np.float64).reshape(-1) if len(head) else np.zeros(0))
    return _merge(candidates, top_n, new)


class CrossEncoderReranker:
    """A cross-encoder over (query, document) pairs, batched over all queries' candidates.

    Args:
        model_name_or_path: a model folder, a folder name on ``BRAID_MODEL_PATH`` or a hub id
            (resolved by :func:`braid.encoders.resolve.resolve_model`).
        batch_size: pairs per forward pass.
        max_length: token limit per pair (truncating the longer side first), capped at the
            tokenizer's ``model_max_length``.
        device: a torch device string; default ``"cuda"`` when available, else ``"cpu"``.
    """

    def __init__(self, model_name_or_path: str, batch_size: int = 32, max_length: int = 512, device: str | None = None):
        for name, v in (("batch_size", batch_size), ("max_length", max_length)):
            check_positive_int(name, v)
        try:
            import torch
            from transformers import AutoModelForSequenceClassification, AutoTokenizer
        except ImportError as exc:
            raise BraidError(f"the cross-encoder needs torch and transformers: pip install 'braid[sparse]' ({exc})") from None
        from braid.encoders.resolve import resolve_model

        ref = resolve_model(model_name_or_path, argument="model")
        self.model_name = ref.name
        self.tokenizer = ref.load(AutoTokenizer, argument="model", what="tokenizer")
        model = ref.load(AutoModelForSequenceClassification, argument="model", what="cross-encoder")
        n_labels = int(model.config.num_labels)
        if n_labels not in (1, 2):
            raise BraidError(
                f"model={ref.name!r} has {n_labels} output labels; a cross-encoder needs 1 (a relevance score) "
                "or 2 (negative, positive)"
            )
        self._column = 0 if n_labels == 1 else 1
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError):
            raise OptionError("device", device, "a torch device such as 'cpu' or 'cuda:0'") from None
        self.model = model.to(self.device).eval()
        limit = getattr(self.tokenizer, "model_max_length", None)
        self.max_length = int(min(max_length, limit)) if isinstance(limit, int) and limit < 1_000_000 else int(max_length)
        self.batch_size = int(batch_size)

    def score(self, queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
        """Scores of the pairs ``(queries[j], docs[j])``: float32 (n_pairs,)."""
        import torch

        if len(queries) != len(docs):
            raise OptionError("docs", f"{len(docs)} texts", f"one per query text ({len(queries)})")
        n = len(queries)
        out = np.empty(n, dtype=np.float32)
        # Batches of similar length waste less time on padding; padding is masked, so scores do not change.
        order = np.argsort([len(q) + len(d) for q, d in zip(queries, docs)], kind="stable")
        with torch.inference_mode():
            for start in range(0, n, self.batch_size):
                idx = order[start : start + self.batch_size]
                enc = self.tokenizer(
                    [queries[j] for j in idx],
                    [docs[j] for j in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                logits = self.model(**enc).logits
                out[idx] = logits[:, self._column].float().cpu().numpy()
        return out

    def rerank(
        self,
        queries: Sequence[str],
        candidates: Hits,
        doc_texts: Callable[[int], str],
        top_n: int | None = 100,
    ) -> Hits:
        """Rerank each query's top ``top_n`` candidates by the cross-encoder; the rest stay below, in order.

        Args:
            queries: n_queries query texts.
            candidates: Hits (n_queries, k).
            doc_texts: ``docno -> text`` of a document (called once per distinct docno).
            top_n: candidates reranked per query (None: all).

        Returns:
            Hits (n_queries, k): reranked rows, cross-encoder logits as the scores of the top ``top_n``.
        """
        if not isinstance(candidates, Hits):
            raise OptionError("candidates", type(candidates).__name__, "a braid.index.hits.Hits")
        if len(queries) != candidates.n_queries:
            raise OptionError("queries", f"{len(queries)} texts", f"one per candidate row ({candidates.n_queries})")
        top_n = _check_top_n(top_n, candidates.k)
        heads = [candidates.row(i)[0][:top_n] for i in range(candidates.n_queries)]
        return _merge(candidates, top_n, self._head_scores(queries, heads, doc_texts))

    def score_candidates(self, queries: Sequence[str], docnos: np.ndarray, doc_texts: Callable[[int], str]) -> np.ndarray:
        """Cross-encoder scores of candidate docnos (n_queries, n): float32, ``-inf`` on padding (docno < 0)."""
        heads = [row[row >= 0] for row in np.asarray(docnos)]
        out = np.full(np.shape(docnos), -np.inf, dtype=np.float32)
        for i, scores in enumerate(self._head_scores(queries, heads, doc_texts)):
            out[i, np.asarray(docnos)[i] >= 0] = scores
        return out

    def _head_scores(self, queries: Sequence[str], heads: list[np.ndarray], doc_texts: Callable[[int], str]) -> list[np.ndarray]:
        texts: dict[int, str] = {}
        pair_q, pair_d = [], []
        for i, head in enumerate(heads):
            for d in head.tolist():
                if d not in texts:
                    texts[d] = str(doc_texts(d))
                pair_q.append(queries[i])
                pair_d.append(texts[d])
        flat = self.score(pair_q, pair_d)
        bounds = np.concatenate([[0], np.cumsum([len(h) for h in heads])])
        return [flat[bounds[i] : bounds[i + 1]] for i in range(len(heads))]


def interpolate_head(hits: Hits, top_n: int, new_scores: np.ndarray, weight: float) -> Hits:
    """Re-rank each row's first ``top_n`` hits by ``(1 - weight) * minmax(old) + weight * minmax(new)``.

    ``new_scores``: float (n_queries, top_n), aligned with ``hits.docnos[:, :top_n]``. Both sides are
    min-max normalised per query (:func:`braid.retrieval.pipeline.fusion.normalize_scores`). The head
    is shifted above the untouched tail (head scores in [2, 3], tail min-max normalised into [0, 1]),
    so ``weight = 1`` replaces the head's order and ``weight = 0`` keeps it.
    """
    from braid.retrieval.pipeline.fusion import normalize_scores

    top_n = min(int(top_n), hits.k)
    head = Hits(hits.docnos[:, :top_n], hits.scores[:, :top_n])
    new = Hits(head.docnos, np.where(head.docnos >= 0, np.asarray(new_scores, dtype=np.float32), -np.inf).astype(np.float32))
    valid = head.docnos >= 0
    mixed = (1 - weight) * np.nan_to_num(normalize_scores(head, "minmax")) + weight * np.nan_to_num(normalize_scores(new, "minmax"))
    tail = Hits(hits.docnos[:, top_n:], hits.scores[:, top_n:])
    tail_norm = normalize_scores(tail, "minmax") if tail.k else None
    rows = []
    for i in range(hits.n_queries):
        d = head.docnos[i][valid[i]]
        s = mixed[i][valid[i]] + 2.0
        if tail_norm is not None:
            tv = tail.docnos[i] >= 0
            d = np.concatenate([d, tail.docnos[i][tv]])
            s = np.concatenate([s, tail_norm[i][tv]])
        rows.append((d, s.astype(np.float32)))
    return Hits.from_lists(rows, hits.k)


@dataclass(frozen=True)
class RescoreStage:
    """A rescoring stage: the index ``component`` it needs (None: none) and
    ``scores(searcher, stage_cfg, queries, docnos (n, top_n)) -> float (n, top_n)`` (-inf on padding)."""

    component: str | None
    scores: Callable


def _retriever_scores(name: str) -> Callable:
    def scores(searcher, stage: dict, queries: Sequence[str], docnos: np.ndarray) -> np.ndarray:
        return searcher.retriever(name).score_candidates(queries, docnos)

    return scores


def _cross_encoder_scores(searcher, stage: dict, queries: Sequence[str], docnos: np.ndarray) -> np.ndarray:
    reranker = CrossEncoderReranker(stage["model"], batch_size=int(stage.get("batch_size", 32)), max_length=int(stage.get("max_length", 512)))

    def text(docno: int) -> str:
        doc = searcher.documents([docno])[0]
        return " ".join(v for v in (doc["title"], doc["text"]) if v)

    return reranker.score_candidates(list(queries), docnos, text)


# Stage name (a pipeline's ``[[rescore]] stage``) -> RescoreStage.
RESCORE_STAGES: dict[str, RescoreStage] = {
    "sparse": RescoreStage("sparse", _retriever_scores("sparse")),
    "dense": RescoreStage("dense", _retriever_scores("dense")),
    "cross-encoder": RescoreStage(None, _cross_encoder_scores),
}
