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

from typing import Callable, Sequence

import numpy as np

from braid.data.errors import BraidError, DataError, OptionError
from braid.index.hits import Hits

__all__ = ["CrossEncoderReranker", "rescore"]


def _check_top_n(top_n: int | None, k: int) -> int:
    if top_n is None:
        return k
    if isinstance(top_n, bool) or not isinstance(top_n, (int, np.integer)) or top_n < 1:
        raise OptionError("top_n", top_n, "None or a positive integer")
    return min(int(top_n), k)


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
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise OptionError(name, v, "a positive integer")
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
        return _merge(candidates, top_n, [flat[bounds[i] : bounds[i + 1]] for i in range(len(heads))])
