"""Compare two directories of Braid outputs file by file: "behaviour unchanged" means this exits 0.

    python scripts/compare_runs.py BASELINE_DIR OTHER_DIR [--tol 1e-6] [--verbose]

Every file under either directory is paired by its relative path and compared by kind:

- ``*.trec`` (TREC runs): the same queries, and for each query the same doc ids in the same order with
  scores equal to ``--tol`` (runs print 6 decimals, so the tolerance allows for the last digit's rounding).
- ``*.metrics.json`` (``braid eval`` metrics files): the same dataset, split, system and recipe, and every
  mean and per-query value equal to ``--tol``.
- any other ``*.json`` (``braid eval --json`` and ``braid search --json`` output): the same structure,
  strings and integers equal, floats equal to ``--tol``.
- anything else: byte for byte.

Prints one row per file (``same`` or what differs first, with a count) and exits 1 on any difference or on a
file present on one side only. Standard library only, so it can judge any code tree without importing it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

# Runs print scores with 6 decimals: two scores within 1e-6 can print 1e-6 apart after rounding.
ROUNDING_SLACK = 1e-9


def read_trec(path: Path) -> dict[str, list[tuple[str, float]]]:
    """``{query_id: [(doc_id, score), ...]}`` in file order (rank order)."""
    run: dict[str, list[tuple[str, float]]] = {}
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 6:
            raise ValueError(f"{path}:{line_no}: expected 6 columns, got {len(parts)}")
        qid, _, doc_id, _, score, _ = parts
        run.setdefault(qid, []).append((doc_id, float(score)))
    return run


def _only_the_tie_at_the_cut(ha: list[tuple[str, float]], hb: list[tuple[str, float]], rank: int, tol: float) -> bool:
    """Both lists have equal scores and, from ``rank`` on, every hit carries the last score: they differ
    only in which members of a tie group larger than the list's remaining room were kept (still a difference)."""
    last = ha[-1][1]
    same_scores = all(abs(sa - sb) <= tol + ROUNDING_SLACK for (_, sa), (_, sb) in zip(ha, hb))
    return same_scores and all(abs(s - last) <= tol + ROUNDING_SLACK for _, s in ha[rank - 1 :] + hb[rank - 1 :])


def compare_trec(a: Path, b: Path, tol: float) -> list[str]:
    ra, rb = read_trec(a), read_trec(b)
    problems = []
    if set(ra) != set(rb):
        only_a, only_b = sorted(set(ra) - set(rb)), sorted(set(rb) - set(ra))
        problems.append(f"queries differ (only in first: {only_a[:3]}{'...' if len(only_a) > 3 else ''}, "
                        f"only in second: {only_b[:3]}{'...' if len(only_b) > 3 else ''})")
    for qid in sorted(set(ra) & set(rb)):
        ha, hb = ra[qid], rb[qid]
        ids_a, ids_b = [d for d, _ in ha], [d for d, _ in hb]
        if ids_a != ids_b:
            if len(ids_a) != len(ids_b):
                problems.append(f"query {qid}: {len(ids_a)} vs {len(ids_b)} hits")
            else:
                rank = next(i for i, (x, y) in enumerate(zip(ids_a, ids_b)) if x != y) + 1
                note = ""
                if _only_the_tie_at_the_cut(ha, hb, rank, tol):
                    note = f"; only inside the tie at the cut (score {ha[-1][1]}: which tied docs make the top {len(ha)})"
                problems.append(f"query {qid}: doc ids differ from rank {rank} ({ids_a[rank - 1]} vs {ids_b[rank - 1]}){note}")
            continue
        worst = max((abs(sa - sb) for (_, sa), (_, sb) in zip(ha, hb)), default=0.0)
        if worst > tol + ROUNDING_SLACK:
            problems.append(f"query {qid}: scores differ by up to {worst:.3g}")
    return problems


def compare_values(x, y, tol: float, where: str, problems: list[str]) -> None:
    """Structural comparison: floats to ``tol``, everything else exactly; appends one line per difference."""
    if isinstance(x, bool) or isinstance(y, bool) or isinstance(x, str) or x is None:
        if x != y:
            problems.append(f"{where}: {x!r} vs {y!r}")
    elif isinstance(x, (int, float)) and isinstance(y, (int, float)):
        if isinstance(x, int) and isinstance(y, int):
            if x != y:
                problems.append(f"{where}: {x} vs {y}")
        elif not (math.isfinite(x) and math.isfinite(y) and abs(x - y) <= tol) and x != y:
            problems.append(f"{where}: {x!r} vs {y!r}")
    elif isinstance(x, dict) and isinstance(y, dict):
        if set(x) != set(y):
            problems.append(f"{where or 'top level'}: keys differ ({sorted(set(x) ^ set(y))[:5]})")
        for key in sorted(set(x) & set(y), key=str):
            compare_values(x[key], y[key], tol, f"{where}.{key}" if where else str(key), problems)
    elif isinstance(x, list) and isinstance(y, list):
        if len(x) != len(y):
            problems.append(f"{where}: {len(x)} vs {len(y)} items")
        for i, (u, v) in enumerate(zip(x, y)):
            compare_values(u, v, tol, f"{where}[{i}]", problems)
    elif type(x) is not type(y) or x != y:
        problems.append(f"{where}: {x!r} vs {y!r}")


def compare_json(a: Path, b: Path, tol: float) -> list[str]:
    problems: list[str] = []
    compare_values(json.loads(a.read_text(encoding="utf-8")), json.loads(b.read_text(encoding="utf-8")), tol, "", problems)
    return problems


def compare_file(a: Path, b: Path, tol: float) -> list[str]:
    if a.suffix == ".trec":
        return compare_trec(a, b, tol)
    if a.suffix == ".json":
        return compare_json(a, b, tol)
    return [] if a.read_bytes() == b.read_bytes() else ["contents differ"]


def compare_dirs(first: Path, second: Path, tol: float) -> list[tuple[str, str, list[str]]]:
    """``[(relative_path, kind, problems)]`` for every file under either directory."""
    def files(root: Path) -> set[str]:
        return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}

    fa, fb = files(first), files(second)
    rows = []
    for rel in sorted(fa | fb):
        kind = "run" if rel.endswith(".trec") else "metrics" if rel.endswith(".metrics.json") else "json" if rel.endswith(".json") else "file"
        if rel not in fb:
            rows.append((rel, kind, ["only in the first directory"]))
        elif rel not in fa:
            rows.append((rel, kind, ["only in the second directory"]))
        else:
            try:
                rows.append((rel, kind, compare_file(first / rel, second / rel, tol)))
            except (ValueError, json.JSONDecodeError, UnicodeDecodeError) as exc:
                rows.append((rel, kind, [f"unreadable: {exc}"]))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path, help="baseline directory")
    parser.add_argument("second", type=Path, help="directory to compare with it")
    parser.add_argument("--tol", type=float, default=1e-6, help="largest allowed score / metric difference (default 1e-6)")
    parser.add_argument("--verbose", "-v", action="store_true", help="list every difference, not the first of each file")
    args = parser.parse_args(argv)
    for d in (args.first, args.second):
        if not d.is_dir():
            parser.error(f"not a directory: {d}")
    rows = compare_dirs(args.first, args.second, args.tol)
    if not rows:
        print(f"no files under {args.first} or {args.second}")
        return 1
    width = max(len(rel) for rel, _, _ in rows)
    print(f"{'file':<{width}}  {'kind':<7}  result")
    for rel, kind, problems in rows:
        if problems:
            more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
            print(f"{rel:<{width}}  {kind:<7}  DIFFERS: {problems[0]}{'' if args.verbose else more}")
            if args.verbose:
                for line in problems[1:]:
                    print(f"{'':<{width}}  {'':<7}           {line}")
        else:
            print(f"{rel:<{width}}  {kind:<7}  same")
    bad = sum(1 for _, _, p in rows if p)
    print(f"{len(rows) - bad} of {len(rows)} files the same" + (f"; {bad} differ" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
