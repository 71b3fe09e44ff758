"""A BEIR-layout dataset directory: ``corpus.jsonl[.gz]``, ``queries.jsonl``, ``qrels/<split>.tsv``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from braid.data.corpus import ReadStats
from braid.data.errors import DataError
from braid.data.qrels import Qrels, read_qrels
from braid.data.queries import read_queries


@dataclass(frozen=True)
class BeirDataset:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        if not self.root.is_dir():
            raise DataError("not a directory (expected a BEIR dataset folder)", self.root)

    @property
    def name(self) -> str:
        return self.root.resolve().name

    @property
    def corpus_path(self) -> Path:
        for name in ("corpus.jsonl", "corpus.jsonl.gz"):
            candidate = self.root / name
            if candidate.exists():
                return candidate
        raise DataError("no corpus.jsonl or corpus.jsonl.gz", self.root)

    @property
    def queries_path(self) -> Path:
        for name in ("queries.jsonl", "queries.jsonl.gz", "queries.tsv"):
            candidate = self.root / name
            if candidate.exists():
                return candidate
        raise DataError("no queries.jsonl or queries.tsv", self.root)

    def splits(self) -> list[str]:
        qrels_dir = self.root / "qrels"
        return sorted(p.stem for p in qrels_dir.glob("*.tsv")) if qrels_dir.is_dir() else []

    def qrels(self, split: str = "test", skip_bad: bool = False, stats: ReadStats | None = None) -> Qrels:
        path = self.root / "qrels" / f"{split}.tsv"
        if not path.exists():
            have = ", ".join(self.splits()) or "none"
            raise DataError(f"no qrels for split {split!r} (available: {have})", path)
        return read_qrels(path, skip_bad=skip_bad, stats=stats)

    def queries(self, split: str | None = "test", skip_bad: bool = False, stats: ReadStats | None = None) -> dict[str, str]:
        """Queries, restricted to those judged in ``split`` (all queries when ``split`` is None)."""
        queries = read_queries(self.queries_path, skip_bad=skip_bad, stats=stats)
        if split is None:
            return queries
        judged = self.qrels(split, skip_bad=skip_bad)
        return {qid: text for qid, text in queries.items() if qid in judged}
