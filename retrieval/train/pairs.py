"""Training pairs: (query, relevant document) from qrels, as flat arrays over an index's docnos.

Every trainer that learns from judgments reads them here, so every one applies the same rules:
only relevance > 0 counts, queries without text or without a relevant document in the index are
left out (and counted), and a split is read only after
:func:`~braid.retrieval.train.leakage.check_training_split` has allowed it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from braid.data.errors import DataError
from braid.retrieval.train.leakage import REPORT_SPLIT, check_training_split, training_record


@dataclass(frozen=True)
class TrainingSet:
    """Training queries and their relevant documents, as flat arrays.

    ``query_ids`` / ``texts``: the queries with at least one relevant document in the index.
    ``pos_ptr`` int64 (n_queries + 1) / ``pos_docnos`` int64 (n_relevant,): CSR of each query's
    relevant docnos. ``pair_query`` / ``pair_docno`` int64 (n_pairs,): one training example per
    (query, relevant document). ``skipped``: judged queries left out (no text, or no relevant
    document in the index). ``source``: where the judgments came from
    (:func:`~braid.retrieval.train.leakage.training_record`), None when built from dicts.
    """

    query_ids: tuple[str, ...]
    texts: tuple[str, ...]
    pos_ptr: np.ndarray
    pos_docnos: np.ndarray
    pair_query: np.ndarray
    pair_docno: np.ndarray
    skipped: int = 0
    source: dict | None = field(default=None, compare=False)

    @property
    def n_pairs(self) -> int:
        return int(self.pair_query.shape[0])

    def positives(self, q: int) -> np.ndarray:
        return self.pos_docnos[self.pos_ptr[q] : self.pos_ptr[q + 1]]

    def fingerprint(self) -> str:
        """SHA-1 of the pairs and texts (what training sees; ``source`` is not part of it)."""
        h = hashlib.sha1()
        for arr in (self.pos_ptr, self.pos_docnos, self.pair_query, self.pair_docno):
            h.update(np.ascontiguousarray(arr).tobytes())
        h.update("\x00".join(self.texts).encode("utf-8"))
        return h.hexdigest()


def make_training_set(queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]], doc_ids: Sequence[str]) -> TrainingSet:
    """Pairs (query, relevant document) from ``qrels`` (relevance > 0), with docnos from ``doc_ids`` (docno order).

    Queries without text, and judgments of documents that are not in the index, are left out
    (counted in ``skipped`` per query); DataError when nothing is left to train on.
    """
    position = {d: i for i, d in enumerate(doc_ids)}
    ids, texts, ptr, pos = [], [], [0], []
    skipped = 0
    for qid in sorted(qrels, key=lambda q: (len(q), q)):
        rel = sorted(position[d] for d, r in qrels[qid].items() if int(r) > 0 and d in position)
        if not rel or qid not in queries or not str(queries[qid]).strip():
            skipped += 1
            continue
        ids.append(qid)
        texts.append(str(queries[qid]))
        pos.extend(rel)
        ptr.append(len(pos))
    if not ids:
        raise DataError("no training query has both a text and a relevant document in the index")
    pos_ptr = np.asarray(ptr, dtype=np.int64)
    pos_docnos = np.asarray(pos, dtype=np.int64)
    pair_query = np.repeat(np.arange(len(ids), dtype=np.int64), np.diff(pos_ptr))
    return TrainingSet(tuple(ids), tuple(texts), pos_ptr, pos_docnos, pair_query, pos_docnos.copy(), skipped)


def training_set_from_dataset(dataset_dir: str | Path, split: str, doc_ids: Sequence[str], report_split: str = REPORT_SPLIT) -> TrainingSet:
    """:func:`make_training_set` from a BEIR folder's ``queries.jsonl`` and ``qrels/<split>.tsv``.

    ``split`` equal to ``report_split`` is refused (:func:`check_training_split`); the result's
    ``source`` is :func:`training_record` of the folder and split.
    """
    from dataclasses import replace

    from braid.data.beir import BeirDataset

    check_training_split(split, report_split)
    ds = BeirDataset(Path(dataset_dir))
    data = make_training_set(ds.queries(split), ds.qrels(split), doc_ids)
    return replace(data, source=training_record(dataset_dir, split))
