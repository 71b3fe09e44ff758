"""Golden runs: a file of commands and the figures they must reproduce, run and checked row by row.

Two layouts are read (YAML or JSON):

- the 2CR layout of ``tests/golden/2cr.yaml`` (after Pyserini's ``2cr/*.yaml``): ``indexes`` maps a
  recipe name to its ``braid index`` command; each entry of ``conditions`` has a ``name``, a
  ``braid eval`` ``command`` and ``datasets``, a list of ``{dataset, index, METRIC: value, ...}``;
- a flat list of ``{"command": "braid eval ...", "expected": {METRIC: value}}`` (optionally ``"index"``:
  a ``braid index`` command to run first, ``"name"``, ``"dataset"``).

Commands may use the placeholders ``$DATA`` and ``$VECTORS`` (the shared collections and vectors),
``$DATASET``, ``$INDEX_ROOT`` (the folder holding ``$DATASET``'s index, one per index recipe) and
``$RUNS``. The commands are run by a caller-supplied ``run(args) -> stdout`` (the CLI runs them in
process), so this module never imports the CLI; an eval command must print ``--json``.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Callable, Sequence

from braid.data.errors import DataError

DEFAULT_TOLERANCE = 1e-4


@dataclass(frozen=True)
class GoldenCase:
    """One row: ``command`` (placeholders unexpanded) must give ``expected`` on ``dataset``."""

    name: str
    command: str
    expected: dict[str, float]
    dataset: str = ""
    index_command: str | None = None
    index_name: str | None = None


@dataclass
class GoldenOutcome:
    case: GoldenCase
    measured: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    tolerance: float = DEFAULT_TOLERANCE

    @property
    def differing(self) -> dict[str, float]:
        """Metric -> measured minus expected, for the metrics off by more than the tolerance (or missing)."""
        out = {}
        for m, want in self.case.expected.items():
            got = self.measured.get(m)
            if got is None:
                out[m] = float("nan")
            elif abs(got - want) > self.tolerance:
                out[m] = got - want
        return out

    @property
    def ok(self) -> bool:
        return self.error is None and not self.differing

    @property
    def status(self) -> str:
        if self.error is not None:
            return f"failed: {self.error}"
        if self.ok:
            return "OK"
        return "differs (" + ", ".join(f"{m} {d:+.4f}" for m, d in self.differing.items()) + ")"


def read_golden(path: str | Path) -> tuple[list[GoldenCase], float]:
    """The cases of a golden file and its tolerance (``tolerance:`` at the top, else 1e-4)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read the golden file: {exc.strerror}", path) from None
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise DataError("reading a YAML golden file needs PyYAML: pip install 'braid[compare]' (or give the file as JSON)", path) from None
        try:
            spec = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise DataError(f"not valid YAML: {exc}", path) from None
    else:
        try:
            spec = json.loads(text)
        except ValueError as exc:
            raise DataError(f"not valid JSON: {exc}", path) from None
    tolerance = DEFAULT_TOLERANCE
    if isinstance(spec, dict):
        tolerance = float(spec.get("tolerance", tolerance))
        cases = _cases_2cr(spec, path)
    elif isinstance(spec, list):
        cases = _cases_flat(spec, path)
    else:
        raise DataError("expected a mapping with 'conditions' (2CR layout) or a list of {command, expected}", path)
    if not cases:
        raise DataError("no golden rows in the file", path)
    return cases, tolerance


def _numbers(entry: dict, skip: Sequence[str], path: Path, where: str) -> dict[str, float]:
    out = {}
    for key, value in entry.items():
        if key in skip:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DataError(f"{where}: expected figure {key!r} must be a number, got {value!r}", path)
        out[str(key)] = float(value)
    if not out:
        raise DataError(f"{where}: no expected figure", path)
    return out


def _cases_2cr(spec: dict, path: Path) -> list[GoldenCase]:
    indexes = spec.get("indexes") or {}
    conditions = spec.get("conditions")
    if not isinstance(conditions, list):
        raise DataError("a 2CR golden file needs a 'conditions' list", path)
    cases = []
    for i, cond in enumerate(conditions):
        where = f"condition {cond.get('name', i)!r}" if isinstance(cond, dict) else f"condition {i}"
        if not isinstance(cond, dict) or not isinstance(cond.get("command"), str) or not isinstance(cond.get("datasets"), list):
            raise DataError(f"{where}: needs 'name', 'command' and a 'datasets' list", path)
        for entry in cond["datasets"]:
            if not isinstance(entry, dict) or "dataset" not in entry:
                raise DataError(f"{where}: each dataset entry needs 'dataset'", path)
            index = entry.get("index")
            if index is not None and index not in indexes:
                raise DataError(f"{where}: index recipe {index!r} is not in 'indexes' (have: {', '.join(indexes) or 'none'})", path)
            cases.append(
                GoldenCase(
                    name=str(cond.get("name", i)),
                    command=cond["command"],
                    expected=_numbers(entry, ("dataset", "index"), path, f"{where}, {entry['dataset']}"),
                    dataset=str(entry["dataset"]),
                    index_command=indexes[index]["command"] if index is not None else None,
                    index_name=index,
                )
            )
    return cases


def _cases_flat(spec: list, path: Path) -> list[GoldenCase]:
    cases = []
    for i, row in enumerate(spec):
        if not isinstance(row, dict) or not isinstance(row.get("command"), str) or not isinstance(row.get("expected"), dict):
            raise DataError(f"row {i}: needs 'command' (a string) and 'expected' ({{metric: value}})", path)
        index = row.get("index")
        cases.append(
            GoldenCase(
                name=str(row.get("name", i)),
                command=row["command"],
                expected=_numbers(row["expected"], (), path, f"row {i}"),
                dataset=str(row.get("dataset", "")),
                index_command=index,
                index_name=f"row{i}" if index else None,
            )
        )
    return cases


def find_shared(start: Sequence[Path] = ()) -> Path | None:
    """The shared folder (``data/`` and ``vectors/``): ``$BRAID_SHARED``, else the first ``shared/``
    with a ``data/`` in an ancestor of the given folders or of the working directory."""
    env = os.environ.get("BRAID_SHARED")
    if env:
        return Path(env)
    for base in [*start, Path.cwd()]:
        for folder in [Path(base).resolve(), *Path(base).resolve().parents]:
            if (folder / "shared" / "data").is_dir():
                return folder / "shared"
    return None


def reproduce(
    path: str | Path,
    run: Callable[[list[str]], str],
    *,
    shared: str | Path | None = None,
    work_dir: str | Path | None = None,
    select: Callable[[GoldenCase], bool] | None = None,
    log: Callable[[str], None] = lambda msg: None,
    on_outcome: Callable[[GoldenOutcome], None] | None = None,
) -> list[GoldenOutcome]:
    """Run every row of the golden file ``path`` and compare its figures.

    ``run(args)`` runs one ``braid`` command line (``args`` without the leading ``braid``) and returns
    its stdout, raising :class:`~braid.data.errors.BraidError` (or any exception) when it fails.
    Indexes are built once per (recipe, dataset) under ``work_dir`` (a temporary folder, removed
    afterwards, when None). ``select`` keeps some rows; ``on_outcome`` sees each outcome as it comes.
    """
    path = Path(path)
    cases, tolerance = read_golden(path)
    if select is not None:
        cases = [c for c in cases if select(c)]
    shared_dir = Path(shared) if shared is not None else find_shared([path.parent])
    temp = None
    if work_dir is None:
        temp = Path(tempfile.mkdtemp(prefix="braid-reproduce-"))
        work = temp
    else:
        work = Path(work_dir)
        work.mkdir(parents=True, exist_ok=True)
    built: dict[tuple[str, str], str | None] = {}
    outcomes = []
    try:
        for case in cases:
            outcome = GoldenOutcome(case, tolerance=tolerance)
            index_root = work / "indexes" / (case.index_name or "default")
            places = {
                "DATA": str(shared_dir / "data") if shared_dir else "$DATA",
                "VECTORS": str(shared_dir / "vectors") if shared_dir else "$VECTORS",
                "DATASET": case.dataset,
                "INDEX_ROOT": str(index_root),
                "RUNS": str(work / "runs" / case.name),
            }
            try:
                if case.index_command is not None:
                    key = (case.index_name or "", case.dataset)
                    if key not in built:
                        built[key] = None
                        log(f"reproduce: building index {case.index_name} for {case.dataset}")
                        try:
                            run(_args(case.index_command, places))
                        except Exception as exc:
                            built[key] = _message(exc)
                    if built[key] is not None:
                        raise _Failed(f"index {case.index_name}: {built[key]}")
                log(f"reproduce: {case.name} on {case.dataset or '-'}")
                stdout = run(_args(case.command, places))
                outcome.measured = _figures(stdout, case)
            except _Failed as exc:
                outcome.error = str(exc)
            except Exception as exc:  # one failing row must not stop the others: it is reported
                outcome.error = _message(exc)
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    return outcomes


class _Failed(Exception):
    pass


def _message(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return text.splitlines()[0] if isinstance(text, str) else str(text)


def _args(command: str, places: dict[str, str]) -> list[str]:
    try:
        args = shlex.split(Template(command).substitute(places))
    except (KeyError, ValueError) as exc:
        raise _Failed(f"bad command {command!r}: {exc}") from None
    if not args or args[0] != "braid":
        raise _Failed(f"not a braid command: {command!r}")
    return args[1:]


def _figures(stdout: str, case: GoldenCase) -> dict[str, float]:
    """The figures of an ``eval --json`` output: ``{dataset: {metric: value}}``, or ``{metric: value}``."""
    lines = [line for line in stdout.strip().splitlines() if line.strip()]
    try:
        result = json.loads(lines[-1]) if lines else None
    except ValueError:
        result = None
    if not isinstance(result, dict):
        raise _Failed("the command printed no JSON object (give eval commands --json)")
    if result and all(isinstance(v, dict) for v in result.values()):
        if case.dataset and case.dataset in result:
            result = result[case.dataset]
        elif len(result) == 1:
            result = next(iter(result.values()))
        else:
            raise _Failed(f"the output has several datasets ({', '.join(result)}); name the row's dataset")
    return {str(k): float(v) for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def format_outcomes(outcomes: Sequence[GoldenOutcome]) -> str:
    """One line per row: condition, dataset, each figure as expected / measured, then OK or differs."""
    rows = []
    for o in outcomes:
        figures = "  ".join(
            f"{m} {want:.4f} / {o.measured[m]:.4f}" if m in o.measured else f"{m} {want:.4f} / -" for m, want in o.case.expected.items()
        )
        rows.append((o.case.name, o.case.dataset or "-", figures, o.status))
    if not rows:
        return "no rows"
    widths = [max(len(r[i]) for r in rows + [("condition", "dataset", "expected / measured", "")]) for i in range(3)]
    head = f"{'condition'.ljust(widths[0])}  {'dataset'.ljust(widths[1])}  {'expected / measured'.ljust(widths[2])}  status"
    lines = [head, "-" * len(head)]
    lines += [f"{a.ljust(widths[0])}  {b.ljust(widths[1])}  {c.ljust(widths[2])}  {d}" for a, b, c, d in rows]
    ok = sum(o.ok for o in outcomes)
    lines.append(f"{ok} of {len(outcomes)} rows reproduced" + ("" if ok == len(outcomes) else f"; {len(outcomes) - ok} differ or failed"))
    return "\n".join(lines)


__all__ = ["GoldenCase", "GoldenOutcome", "read_golden", "reproduce", "format_outcomes", "find_shared"]
