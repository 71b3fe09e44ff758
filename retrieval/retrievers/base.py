"""What the retrievers share: the model a recorded encoder loads from, and a per-text query cache."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Sequence

QUERY_CACHE_SIZE = 100_000


def model_for_queries(enc: dict) -> str:
    """The model to encode queries with: the folder the index was built with when it is still there
    (same weights, no hub round trip), else the recorded name (resolved as usual)."""
    local = enc.get("model_dir")
    if local and Path(local).is_dir():
        return local
    return enc["model"]


class QueryCache:
    """Memoises per-text query encodings (PRF, rescoring and tuning encode the same queries again).

    ``encode(texts) -> rows``: one value per text. Bounded: cleared when it would exceed ``size``.
    Thread-safe: concurrent callers may encode the same new text twice, never corrupt the cache.
    """

    def __init__(self, encode: Callable[[list[str]], Sequence], size: int = QUERY_CACHE_SIZE):
        self._encode = encode
        self._size = size
        self._rows: dict[str, object] = {}
        self._lock = threading.Lock()

    def get(self, queries: Sequence[str]) -> list:
        rows = self._rows  # a snapshot: clearing replaces the dict, it never empties this one
        todo = list(dict.fromkeys(q for q in queries if q not in rows))
        if not todo:
            return [rows[q] for q in queries]
        fresh = dict(zip(todo, self._encode(todo)))
        with self._lock:
            if len(self._rows) + len(fresh) > self._size:
                self._rows = {}
            self._rows.update(fresh)
        return [fresh[q] if q in fresh else rows[q] for q in queries]
