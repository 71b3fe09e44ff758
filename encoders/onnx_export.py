"""ONNX graphs of the encoders' models: export, optimise, quantise, cache, open.

A graph is the model *with its head* (SPLADE pooling, or pooling + normalisation), so one
``InferenceSession.run`` turns token ids into the final (batch, dim) float32 array: no logits or
hidden states come back to Python. Graphs are exported once per model by ``torch.onnx.export``
(the TorchScript-based exporter, eager attention; dynamic batch and length), optimised offline by
ONNX Runtime at the ``EXTENDED`` level (attention, GELU and layer-norm fusions: portable across
x86 CPUs, unlike ``ALL``), and for ``precision="int8"`` dynamically quantised (int8 weights per
output channel, activations quantised per batch at run time) before that optimisation.

Cache: ``$BRAID_CACHE/onnx/KEY/`` (default ``~/.cache/braid/onnx``), never the model folder, so a
read-only model folder works; when the cache cannot be written, a per-user folder in the temporary
directory is used. ``KEY`` hashes the model files' names, sizes and modification times (for a hub
id: the commit of its cached snapshot), the head
and its settings, the precision and :data:`EXPORT_VERSION`: a changed model file, head or recipe
gives a new graph. Each entry is written to a temporary sibling and renamed into place, so
concurrent processes never see half a graph. Opening a cached graph needs onnxruntime only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from braid.data.errors import BraidError

CACHE_ENV = "BRAID_CACHE"
EXPORT_VERSION = 1
OPSET = 17
GRAPH_FILE = "model.onnx"
META_FILE = "meta.json"
# Fingerprinted model files: everything that shapes the weights, the graph or the tokenizer.
_SKIP_SUFFIXES = (".md", ".txt.lock", ".lock")
_SKIP_NAMES = ("LICENSE", "NOTICE", ".gitattributes")


def cache_root() -> Path:
    """``$BRAID_CACHE/onnx`` (default ``~/.cache/braid/onnx``), or a per-user temporary folder when that cannot be written."""
    base = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "braid").expanduser()
    root = base / "onnx"
    try:
        root.mkdir(parents=True, exist_ok=True)
        if os.access(root, os.W_OK):
            return root
    except OSError:
        pass
    fallback = Path(tempfile.gettempdir()) / f"braid-cache-{os.getuid() if hasattr(os, 'getuid') else 'user'}" / "onnx"
    fallback.mkdir(parents=True, exist_ok=True)
    warnings.warn(f"braid: cannot write the ONNX cache {root}; using {fallback} (set {CACHE_ENV} to choose)", stacklevel=3)
    return fallback


def model_identity(ref: Any) -> list[list]:
    """What identifies a resolved model's files: a local folder's :func:`model_fingerprint`, or for a
    hub id the commit of its snapshot in the Hugging Face cache (the folder holding its config.json)."""
    if ref.local_dir is not None:
        return model_fingerprint(Path(ref.local_dir))
    config = ref.file("config.json")
    if config is None:
        raise BraidError(f"model={ref.name!r}: cannot get its config.json to export it to ONNX")
    return [[f"hub:{ref.location}", config.parent.name]]


def model_fingerprint(folder: Path) -> list[list]:
    """``[relative path, size, mtime_ns]`` of each file that makes the model (sorted): cheap, no hashing of weights."""
    out = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or rel.parts[0] == "onnx":
            continue
        if not path.is_file() or path.name in _SKIP_NAMES or path.name.endswith(_SKIP_SUFFIXES):
            continue
        st = path.stat()
        out.append([rel.as_posix(), st.st_size, st.st_mtime_ns])
    return out


def graph_key(identity: list, head_key: str, precision: str) -> tuple[str, dict]:
    """(cache key, what it hashes) of the graph of a model (its :func:`model_identity`) with ``head_key`` at ``precision``."""
    what = {"files": identity, "head": head_key, "precision": precision, "export_version": EXPORT_VERSION}
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:24]
    return digest, what


def cached_graph(backbone: Any, precision: str) -> Path:
    """The path of the graph of ``backbone`` (its model and head) at ``precision``, exporting it when not cached."""
    key, what = graph_key(model_identity(backbone.ref), backbone.head.key, precision)
    entry = cache_root() / key
    graph = entry / GRAPH_FILE
    if graph.is_file() and (entry / META_FILE).is_file():
        return graph
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=entry.parent))
    try:
        export_graph(backbone, precision, tmp / GRAPH_FILE)
        meta = {"model": backbone.ref.name, "location": backbone.ref.location, **what, **_versions()}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        try:
            os.replace(tmp, entry)
        except OSError:
            if not graph.is_file():  # another process won the race only if its graph is there
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return graph


def _versions() -> dict:
    out = {}
    for name in ("torch", "transformers", "onnx", "onnxruntime"):
        mod = sys.modules.get(name)
        out[f"{name}_version"] = getattr(mod, "__version__", None)
    return out


@contextlib.contextmanager
def _quiet() -> Any:
    """The exporter's tracer and deprecation warnings are about its own internals, not the user's input."""
    previous = logging.root.manager.disable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)  # onnxruntime.quantization advises pre-processing on the root logger
        try:
            yield
        finally:
            logging.disable(previous)


def export_graph(backbone: Any, precision: str, out: Path) -> None:
    """Export model + head of ``backbone`` to ``out`` (fp32 or int8), optimised for ONNX Runtime."""
    from braid.encoders.base import require_torch

    require_torch("exporting a model to ONNX (done once per model; the cached graph then runs without torch)")
    import torch
    import transformers

    try:
        import onnx  # noqa: F401 - torch.onnx.export needs it
    except ImportError:
        raise BraidError("exporting to ONNX needs the onnx package; install it with: pip install 'braid[onnx]'") from None

    loader = getattr(transformers, backbone.head.loader)

    class _Eager:  # eager attention traces to plain MatMul/Softmax, which ONNX Runtime fuses
        @staticmethod
        def from_pretrained(location):
            return loader.from_pretrained(location, attn_implementation="eager")

    model = backbone.ref.load(_Eager, "model", what="model").eval().float()
    from braid.encoders.base import _model_input_names

    names = _model_input_names(model)
    probe = {k: torch.from_numpy(v) for k, v in backbone.probe_inputs(names).items()}
    with torch.inference_mode():
        graph = backbone.head.graph(model, probe).eval()
    raw = out.with_name("raw.onnx")
    dynamic = {n: {0: "batch", 1: "length"} for n in names}
    dynamic["output"] = {0: "batch"}
    with _quiet(), torch.no_grad():
        torch.onnx.export(
            graph,
            tuple(probe[n] for n in names),
            str(raw),
            input_names=list(names),
            output_names=["output"],
            dynamic_axes=dynamic,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    source = raw
    if precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        source = out.with_name("int8.onnx")
        with _quiet():
            quantize_dynamic(str(raw), str(source), weight_type=QuantType.QInt8, per_channel=True)
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(out)
    so.log_severity_level = 3
    ort.InferenceSession(str(source), so, providers=["CPUExecutionProvider"])
    for path in {raw, source}:
        path.unlink(missing_ok=True)


def load_session(backbone: Any, options: Any) -> tuple[Path, Any]:
    """``(graph path, onnxruntime.InferenceSession)`` for ``backbone`` at ``options.precision`` on the CPU.

    Threads: ``options.threads`` intra-op threads (default: ONNX Runtime's, one per physical core),
    without spin-waiting (idle workers would otherwise burn CPU that the retrieval kernels need).
    """
    import onnxruntime as ort

    precision = options.precision if options.precision in ("fp32", "int8") else "fp32"
    graph = cached_graph(backbone, precision)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # the rest was done when exporting
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.inter_op_num_threads = 1
    if options.threads is not None:
        so.intra_op_num_threads = int(options.threads)
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(graph), so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - a damaged cache entry: say where it is
        raise BraidError(f"cannot open the ONNX graph {graph} ({exc}); delete {graph.parent} to export it again") from None
    return graph, session
