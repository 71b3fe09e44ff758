"""What every ``braid`` command shares: how errors end a command (message and exit status), the
command classes that apply it, and the options defined once (build, retriever, evaluation, output).

Exit status: 0 success; 2 the command line is wrong (click's usage errors, and the library's
:class:`~braid.data.errors.OptionError`: a bad or contradictory option value); 1 the command failed
on what it was given (any other :class:`~braid.data.errors.BraidError`: bad input data, an unusable
index; or a file that is missing, unreadable or of the wrong kind). Either way one line on stderr,
no traceback. Anything else is a bug and keeps its traceback.

Option groups hand their values to the command as one keyword (``build=BuildOptions``,
``knobs={...}``, ``evaluation={...}``), so commands take a handful of parameters. Nothing heavy
is imported here: the library types are built inside the command call, not at import time.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import click

from braid.data.errors import BraidError, OptionError, check_finite, check_positive_int

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_STATUS_HELP = (
    "Exit status: 0 on success; 2 when the command line is wrong (an unknown option, a missing argument, "
    "a bad or contradictory option value); 1 when the command failed on what it was given (bad input data, "
    "an unusable index, a missing or unreadable file). Errors are one line on stderr."
)

# Files named on the command line that are missing, unreadable or of the wrong kind.
FILE_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


# --------------------------------------------------------------------------------------------------
# Errors and exit statuses
# --------------------------------------------------------------------------------------------------
class CommandError(click.ClickException):
    """A one-line ``Error: ...`` with its exit status (click prints it and exits)."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE):
        super().__init__(message)
        self.exit_code = exit_code


def _file_error_message(exc: OSError) -> str:
    if exc.filename is None:
        return str(exc)
    return f"{exc.filename}: {exc.strerror or exc}"


@contextlib.contextmanager
def reporting_errors() -> Iterator[None]:
    """Turn the library's user errors and file errors into :class:`CommandError` (see the module docstring)."""
    try:
        yield
    except OptionError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    except BraidError as exc:
        raise CommandError(str(exc), EXIT_FAILURE) from None
    except FILE_ERRORS as exc:
        raise CommandError(_file_error_message(exc), EXIT_FAILURE) from None


class _ReportsErrors:
    """Parsing (option types and callbacks may call the library's checks) and running both report errors."""

    def make_context(self, info_name, args, parent=None, **extra):
        with reporting_errors():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx):
        with reporting_errors():
            return super().invoke(ctx)


class BraidCommand(_ReportsErrors, click.Command):
    """Every ``braid`` command: errors reported as the module docstring says."""


class BraidGroup(_ReportsErrors, click.Group):
    """A group of ``braid`` commands; its ``@group.command()`` and ``@group.group()`` are Braid ones too."""

    command_class = BraidCommand
    group_class = type  # click: subgroups get this group's class


def command(name: str, **attrs) -> Callable:
    """``click.command`` with :class:`BraidCommand` and ``-h``/``--help``."""
    return click.command(name, cls=BraidCommand, context_settings={"help_option_names": ["-h", "--help"]}, **attrs)


def group(name: str | None = None, **attrs) -> Callable:
    """``click.group`` with :class:`BraidGroup` and ``-h``/``--help``."""
    return click.group(name, cls=BraidGroup, context_settings={"help_option_names": ["-h", "--help"]}, **attrs)


# --------------------------------------------------------------------------------------------------
# Option types (checked with the library's own checks, so messages are the same in every layer)
# --------------------------------------------------------------------------------------------------
def _flag(param: click.Parameter | None) -> str:
    if param is None:
        return "value"
    if isinstance(param, click.Option) and param.opts:
        return max(param.opts, key=len)
    return param.human_readable_name


class PositiveInt(click.IntRange):
    """An integer >= 1 (:func:`braid.data.errors.check_positive_int`)."""

    def __init__(self) -> None:
        super().__init__(min=1)

    def convert(self, value, param, ctx):
        return check_positive_int(_flag(param), click.INT.convert(value, param, ctx))


class PositiveFloat(click.FloatRange):
    """A finite number > 0 (:func:`braid.data.errors.check_finite`)."""

    def __init__(self) -> None:
        super().__init__(min=0, min_open=True)

    def convert(self, value, param, ctx):
        return check_finite(_flag(param), click.FLOAT.convert(value, param, ctx), low=0, low_open=True)


class RuntimeChoice(click.Choice):
    """A ``--runtime`` spelling (:data:`braid.encoders.base.RUNTIME_SPECS`), checked by :func:`~braid.encoders.base.parse_runtime`."""

    def __init__(self) -> None:
        from braid.encoders.base import RUNTIME_SPECS

        super().__init__(list(RUNTIME_SPECS))

    def convert(self, value, param, ctx):
        from braid.encoders.base import parse_runtime

        parse_runtime(value, _flag(param))
        return value


POSITIVE_INT = PositiveInt()
POSITIVE_FLOAT = PositiveFloat()

PQ_KINDS = ("pq", "opq", "ivfpq")


def parse_dense_index(value: str | None) -> dict:
    """``KIND`` or ``KIND:M`` (product quantizers: M sub-quantizers of 8 bits = M bytes per vector)
    -> the ``dense_index`` dict of :class:`~braid.retrieval.build.builder.BuildOptions`; None (not
    given) -> ``{}``, the default (flat)."""
    if value is None:
        return {}
    kind, sep, m = value.partition(":")
    if not sep:
        return {"kind": kind}
    if kind not in PQ_KINDS or not m.isdigit() or int(m) < 1:
        raise OptionError("--dense-index", value, "KIND or pq:M / opq:M / ivfpq:M with M a positive integer")
    return {"kind": kind, "m": int(m)}


def split_list(value: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [x.strip() for x in value.split(",") if x.strip()]


# --------------------------------------------------------------------------------------------------
# Option groups
# --------------------------------------------------------------------------------------------------
def option_group(into: str, *options: Callable, make: Callable[[dict, dict], Any] | None = None) -> Callable:
    """Apply click ``options`` (shown in the order given) and pass their values to the command as
    the one keyword ``into``: ``make(values, rest)``, or the ``values`` dict itself. ``rest`` is
    the command's other parameters, read only (build options read ``--quiet``)."""

    def decorator(fn: Callable) -> Callable:
        probe: Any = lambda: None  # noqa: E731 (collects the Parameter objects the options make)
        for option in reversed(options):
            probe = option(probe)
        params = probe.__click_params__
        names = [p.name for p in params]

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            values = {name: kwargs.pop(name) for name in names}
            kwargs[into] = make(values, kwargs) if make is not None else values
            return fn(*args, **kwargs)

        wrapper.__click_params__ = list(getattr(fn, "__click_params__", [])) + params
        return wrapper

    return decorator


def runtime_option(fn: Callable) -> Callable:
    """``--runtime``: what runs the encoders (one definition for index, search, eval, tune, serve, compare)."""
    return click.option(
        "--runtime",
        type=RuntimeChoice(),
        default="auto",
        show_default=True,
        help="What runs the encoders: onnx = ONNX Runtime (CPU; the graph is exported once per model and cached), "
        "onnx-int8 = the same with int8 dynamic quantisation, torch = eager PyTorch (any device). auto: on a CPU, "
        "ONNX Runtime for queries and SPLADE documents, torch for dense documents (the faster of the two); torch on a GPU.",
    )(fn)


def quiet_option(fn: Callable) -> Callable:
    return click.option("--quiet", "-q", is_flag=True, help="No progress bars or log lines.")(fn)


def json_option(help: str) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help=help)


def k_option(default: int, help: str) -> Callable:
    return click.option("-k", "k", type=POSITIVE_INT, default=default, show_default=True, help=help)


def index_root_option(fn: Callable) -> Callable:
    return click.option(
        "--index-root",
        type=click.Path(path_type=Path),
        default=Path("indexes"),
        show_default=True,
        help="Where per-dataset indexes (INDEX_ROOT/NAME) are built or reused.",
    )(fn)


# --------------------------------------------------------------------------------------------------
# The plain-text result table of `braid search`
# --------------------------------------------------------------------------------------------------
ELLIPSIS = "\u2026"


def _char_width(c: str) -> int:
    import unicodedata

    return 0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1


def display_width(text: str) -> int:
    """Terminal columns ``text`` takes: wide and full-width characters 2, combining marks 0, others 1."""
    if text.isascii():
        return len(text)
    return sum(_char_width(c) for c in text)


def fit(text: str, width: int) -> str:
    """``text`` on one line (runs of whitespace, newlines included, become one space) in at most
    ``width`` columns; a cut text ends with an ellipsis."""
    text = " ".join(text.split())
    if text.isascii():  # one column per character
        return text if len(text) <= width else text[: max(width - 1, 0)].rstrip() + ELLIPSIS
    cut, used = None, 0
    for i, c in enumerate(text):  # stops at the first character past the width (texts can be long)
        used += _char_width(c)
        if cut is None and used > width - 1:
            cut = i
        if used > width:
            return text[:cut].rstrip() + ELLIPSIS
    return text


def pad(text: str, width: int, right: bool = False) -> str:
    gap = " " * max(width - display_width(text), 0)
    return gap + text if right else text + gap


def format_hits(hits: list[dict], fields: bool = True, title_width: int = 80, text_width: int = 160, id_width: int = 40) -> list[str]:
    """The lines of the result table: rank, score and id in columns as wide as the widest value
    (ids longer than ``id_width`` columns are cut), then the title; the text, when ``fields``, on
    the next line under the id. Titles and texts are cut to their widths with an ellipsis."""
    if not hits:
        return ["no hits"]
    ranks = [str(h["rank"]) for h in hits]
    scores = [f"{h['score']:.4f}" for h in hits]
    ids = [fit(str(h["id"]), id_width) for h in hits]
    w_rank, w_score, w_id = (max(display_width(v) for v in col) for col in (ranks, scores, ids))
    indent = " " * (w_rank + 2 + w_score + 2)
    lines = []
    for hit, rank, score, doc_id in zip(hits, ranks, scores, ids):
        title = fit(hit.get("title") or "", title_width) if fields else ""
        lines.append(f"{pad(rank, w_rank, right=True)}  {pad(score, w_score, right=True)}  {pad(doc_id, w_id) if title else doc_id}{'  ' + title if title else ''}")
        text = fit(hit.get("text") or "", text_width) if fields else ""
        if text:
            lines.append(indent + text)
    return lines


def progress_enabled(quiet: bool) -> bool:
    """Progress bars: unless --quiet, and only on a terminal."""
    return not quiet and sys.stderr.isatty()


def logger(quiet: bool) -> Callable[[str], None]:
    """Log lines to stderr unless --quiet."""
    return (lambda msg: None) if quiet else (lambda msg: click.echo(msg, err=True))


def _make_build(values: dict, rest: dict):
    from braid.retrieval.build.builder import BuildOptions

    return BuildOptions(
        retrievers=tuple(split_list(values.pop("retrievers"))),
        dense_index=parse_dense_index(values.pop("dense_index")),
        progress=progress_enabled(bool(rest.get("quiet"))),
        **values,
    )


build_options = option_group(
    "build",
    click.option("--retrievers", default="bm25", show_default=True, help="Comma-separated components to build: bm25, sparse, dense, pyserini."),
    click.option("--overwrite", is_flag=True, help="Replace an existing index directory (atomically)."),
    click.option("--skip-bad", is_flag=True, help="Skip malformed/duplicate/empty records and report how many."),
    click.option("--allow-empty", is_flag=True, help="Index documents whose title and text are empty."),
    click.option("--sparse-model", default=None, help="SPLADE model: folder or hub id (default rasyosef/splade-tiny)."),
    click.option("--sparse-vectors", type=click.Path(path_type=Path), default=None, help="Pre-encoded document vectors (JSONL {id, vector} or .npz) instead of a model."),
    click.option("--dense-model", default=None, help="Bi-encoder: folder or hub id (default sentence-transformers/all-MiniLM-L6-v2)."),
    click.option("--dense-vectors", type=click.Path(path_type=Path), default=None, help="Pre-encoded document embeddings (.npy float32, corpus order) instead of encoding."),
    click.option("--dense-index", default=None, help="FAISS index type (default flat): flat, hnsw, ivf, ivfpq, pq, opq, bin; pq/opq/ivfpq take ':M' sub-quantizers (e.g. pq:96 = 96 bytes per vector); bin = flat plus sign bits for the dense-bin retriever."),
    click.option(
        "--vectors/--no-vectors",
        "keep_vectors",
        default=True,
        show_default=True,
        help="Keep the encoded vectors in INDEX/vectors/ (rebuilds without re-encoding; exact dense rescoring and PRF on a PQ index). --no-vectors keeps only the index files (docs/index-files.md).",
    ),
    click.option("--batch-size", type=POSITIVE_INT, default=32, show_default=True, help="Encoding batch size."),
    click.option("--device", default="auto", show_default=True, help="Encoding device: auto, cpu, cuda."),
    runtime_option,
    make=_make_build,
)
build_options.__doc__ = """What to build and how (``build=BuildOptions``); progress bars follow the command's ``--quiet``.
``--runtime`` is ``BuildOptions.runtime``; commands that also search (eval, tune) encode queries with it too."""


def parse_filter_option(ctx, param, value):
    if value is None:
        return None
    from braid.data.filters import parse_filter

    return parse_filter(value, "--filter")


def retriever_options(fn: Callable) -> Callable:
    """``--retriever``, ``--pipeline`` and every query knob of the retriever registry; the knobs given
    reach the command as one ``knobs`` dict (validated by the library against what is searched)."""
    from braid.retrieval import retrievers as registry

    knobs = []
    for name, knob in registry.KNOBS.items():
        if knob.kind is bool:
            knobs.append(click.option(knob.flag, name, is_flag=True, default=None, help=knob.help))
        else:
            knobs.append(click.option(knob.flag, name, type=knob.kind, default=None, help=f"{knob.help} ({knob.describe()})"))
    knobs.append(click.option("--filter", "filter", default=None, callback=parse_filter_option,
                              help="Metadata filter applied inside every retriever before its top-k: 'year >= 2000 and lang in (en, de)' or JSON."))  # fmt: skip
    fn = option_group("knobs", *knobs, make=lambda values, rest: {k: v for k, v in values.items() if v is not None})(fn)
    fn = click.option(
        "--pipeline",
        "pipeline",
        default=None,
        help="A fusion pipeline: a TOML file or a built-in name (hybrid, hybrid-rrf, ...).",
    )(fn)
    return click.option(
        "--retriever",
        "-r",
        default=None,
        help="One of: " + ", ".join(registry.RETRIEVERS) + ". Default: hybrid fusion when the index has several.",
    )(fn)


DEFAULT_METRICS = "ndcg@10,recall@100,recall@1000,mrr@10,map"


def _make_evaluation(values: dict, rest: dict) -> dict:
    from braid.retrieval.eval.evaluate import check_metrics

    return {
        "split": values["split"],
        "k": values["k"],
        "metrics": check_metrics(split_list(values["metrics"])),
        "remove_self_hits": not values["keep_self_hits"],
        "runs_dir": values["runs_dir"],
    }


def evaluation_options(runs_dir: Path | None = Path("runs"), metrics: str = DEFAULT_METRICS) -> Callable:
    """Split, depth, metrics, self-hits and where runs go: ``evaluation={split, k, metrics,
    remove_self_hits, runs_dir}``, the keywords of the library's evaluation functions."""
    return option_group(
        "evaluation",
        click.option("--split", default="test", show_default=True, help="Qrels split to evaluate."),
        k_option(1000, "Hits per query."),
        click.option("--metrics", default=metrics, show_default=True, help="Comma-separated measures (pytrec_eval names, @cutoff)."),
        click.option("--keep-self-hits", is_flag=True, help="Do not drop hits whose doc id equals the query id (BEIR drops them)."),
        click.option(
            "--runs-dir",
            type=click.Path(path_type=Path),
            default=runs_dir,
            show_default=runs_dir is not None,
            help="Where TREC runs and metrics are written" + ("." if runs_dir is not None else " (default: not written)."),
        ),
        make=_make_evaluation,
    )
