"""Mechanics shared by the sparse and dense encoders: options, tokenizer, batching by length, runtimes.

Nothing here knows about pooling or vectors: :mod:`braid.encoders.sparse` and
:mod:`braid.encoders.dense` give :class:`TransformerBackbone` a *head* (SPLADE pooling, or
pooling + normalisation) and get ``(batch, dim)`` float32 arrays back. The backbone runs the model
with one of two runtimes, the same head in both:

* ``"torch"``: the transformers model in eager PyTorch (any device, bf16/fp16 autocast);
* ``"onnx"``: the model with its head exported once to an ONNX graph
  (:mod:`braid.encoders.onnx_export`, cached by a fingerprint of the model files) and run by ONNX
  Runtime on the CPU, in fp32 or with int8 dynamic quantisation. Loading it imports neither torch
  nor transformers (only the first export of a model needs them).

``runtime="auto"`` (the default) is ONNX on the CPU when onnxruntime is installed, torch on a GPU.
Texts are tokenized by the Rust ``tokenizers`` library straight from the model's
``tokenizer.json`` (no transformers either); torch and transformers are imported inside the
functions that need them, never at module import.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import queue
import sys
import threading
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np

from braid.data.errors import BraidError, OptionError, check_int, check_positive_int
from braid.encoders.resolve import ModelRef, resolve_model

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
RUNTIMES = ("auto", "torch", "onnx")
# What each runtime can run: autocast is a torch feature, int8 dynamic quantisation an ONNX one.
_RUNTIME_PRECISIONS = {"torch": ("fp32", "bf16", "fp16"), "onnx": ("fp32", "int8")}
# ``--runtime`` spellings (CLI and index options) -> (runtime, precision or None for "keep").
RUNTIME_SPECS = {"auto": ("auto", None), "torch": ("torch", None), "onnx": ("onnx", None), "onnx-int8": ("onnx", "int8")}
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# The device pipeline of TransformerBackbone.run_batches (torch on a GPU): a worker thread tokenizes
# PIPELINE_TEXTS texts at a time, length-sorts and pads them into batches (pinned memory on CUDA) and keeps
# up to PIPELINE_DEPTH batches ready, while the main thread copies them without blocking and runs the
# model. "auto": on for torch on a GPU; "on" / "off" force it (tests run it on the CPU).
PIPELINE = "auto"
PIPELINE_TEXTS = 4096
PIPELINE_DEPTH = 4


@dataclass(frozen=True)
class RuntimeOptions:
    """How to run a model; none of these change what a text encodes to (beyond float rounding), except int8.

    ``max_length``: tokens per text after truncation (special tokens included); ``batch_size``:
    texts per forward pass (batches are formed from texts of similar length); ``device``:
    ``"auto"`` (CUDA when a GPU is present, else CPU), ``"cpu"`` or ``"cuda"``; ``precision``:
    ``"fp32"``, ``"bf16"`` / ``"fp16"`` autocast (torch), or ``"int8"`` dynamic quantisation
    (ONNX); ``threads``: intra-op threads (torch: a process-wide setting; ONNX: per session;
    ``None`` leaves the runtime's default; ``braid serve`` gives its query encoders one thread per
    concurrent search, ``Searcher(query_threads=...)``, docs/benchmarks/encoders.md); ``runtime``:
    ``"auto"``, ``"torch"`` or ``"onnx"`` (see :func:`resolve_runtime`).
    """

    max_length: int = 256
    batch_size: int = 32
    device: str = "auto"
    precision: str = "fp32"
    threads: int | None = None
    runtime: str = "auto"

    def __post_init__(self) -> None:
        check_int("max_length", self.max_length, low=2)
        check_positive_int("batch_size", self.batch_size)
        if self.device not in DEVICES:
            raise OptionError("device", self.device, f"one of {', '.join(DEVICES)}")
        if self.precision not in PRECISIONS:
            raise OptionError("precision", self.precision, f"one of {', '.join(PRECISIONS)}")
        check_positive_int("threads", self.threads, allow_none=True)
        if self.runtime not in RUNTIMES:
            raise OptionError("runtime", self.runtime, f"one of {', '.join(RUNTIMES)}")
        if self.runtime != "auto" and self.precision not in _RUNTIME_PRECISIONS[self.runtime]:
            other = "onnx" if self.runtime == "torch" else "torch"
            raise OptionError(
                "precision", self.precision,
                f"runtime={self.runtime!r} runs {' or '.join(_RUNTIME_PRECISIONS[self.runtime])}; {self.precision} needs runtime={other!r}",
            )
        if self.runtime == "onnx" and self.device == "cuda":
            raise OptionError("device", self.device, "runtime='onnx' runs on the CPU; use device='cpu' or 'auto', or runtime='torch'")
        if self.precision == "int8" and self.device == "cuda":
            raise OptionError("precision", self.precision, "int8 runs through ONNX Runtime on the CPU, not on device='cuda'")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RuntimeOptions":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise OptionError("runtime options", sorted(unknown), f"known keys: {', '.join(sorted(known))}")
        return cls(**d)


def parse_runtime(spec: str, name: str = "runtime") -> tuple[str, str | None]:
    """``"auto"`` | ``"torch"`` | ``"onnx"`` | ``"onnx-int8"`` -> ``(runtime, precision)``; precision None keeps the default."""
    if spec not in RUNTIME_SPECS:
        raise OptionError(name, spec, f"one of {', '.join(RUNTIME_SPECS)}")
    return RUNTIME_SPECS[spec]


def runtime_kwargs(spec: str | None, name: str = "runtime") -> dict:
    """Encoder keyword arguments for a runtime spec (None: ``"auto"``): ``{"runtime": ...}`` plus ``precision`` for ``"onnx-int8"``."""
    runtime, precision = parse_runtime(spec or "auto", name)
    return {"runtime": runtime, **({"precision": precision} if precision else {})}


def runtime_label(runtime: str, precision: str) -> str:
    """The ``--runtime`` spelling of a resolved runtime and precision: ``"torch"``, ``"onnx"`` or ``"onnx-int8"``."""
    return "onnx-int8" if runtime == "onnx" and precision == "int8" else runtime


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def _gpu_possible() -> bool:
    """Whether torch could see a CUDA GPU, answered without importing torch when the answer is no.

    No torch, a CPU build of torch (version tag ``+cpu``) or no GPU driver (neither NVIDIA's nor
    ROCm's device node) all mean no; otherwise torch is asked.
    """
    if "torch" not in sys.modules:
        import importlib.metadata  # here, not at the top: it costs ~30 ms of every command's start-up

        try:
            version = importlib.metadata.version("torch")
        except importlib.metadata.PackageNotFoundError:
            return False
        if "+cpu" in version:
            return False
        if not (os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/kfd")):
            return False
    import torch

    return bool(torch.cuda.is_available())


def resolve_runtime(options: RuntimeOptions, kind: str = "query", cpu_documents: str = "onnx") -> str:
    """The runtime ``options`` ask for to encode texts of ``kind``: ``"torch"`` or ``"onnx"``.

    ``"auto"``: ONNX when onnxruntime is installed and the model runs on the CPU (``device="cpu"``,
    or ``"auto"`` without a GPU), torch otherwise; ``precision="int8"`` always means ONNX and
    bf16/fp16 always torch. On the CPU, documents (long texts in large batches) take
    ``cpu_documents``, the runtime measured faster for the head (see :class:`Head`).
    """
    runtime = options.runtime
    if runtime == "auto":
        runtime = _resolve_auto(options)
        if runtime == "onnx" and kind == "document" and options.precision != "int8":
            runtime = cpu_documents
    if runtime == "onnx" and not onnxruntime_available():
        raise BraidError("runtime='onnx' needs onnxruntime; install it with: pip install 'braid[onnx]'")
    return runtime


def _resolve_auto(options: RuntimeOptions) -> str:
    if options.precision == "int8":
        return "onnx"
    if options.precision in ("bf16", "fp16") or options.device == "cuda" or not onnxruntime_available():
        return "torch"
    if options.device == "cpu" or not _gpu_possible():
        return "onnx"
    return "torch"


def check_texts(texts: Any, name: str = "texts") -> list[str]:
    """A sequence of str -> list[str]; OptionError naming ``name`` for a bare str or a non-str item."""
    if isinstance(texts, (str, bytes)):
        raise OptionError(name, "a single string", "a sequence of strings (wrap one text in a list)")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise OptionError(f"{name}[{i}]", type(t).__name__, "every text must be a str")
    return texts


def length_sorted_batches(
    lengths: Sequence[int] | np.ndarray, batch_size: int, max_tokens: int | None = None
) -> list[np.ndarray]:
    """Split positions ``0..n-1`` into batches of at most ``batch_size`` texts of similar length.

    ``lengths``: int (n,). ``max_tokens``: also keep ``len(batch) * longest`` (the padded size) at
    most this (a batch always has at least one text). Returns a list of int64 index arrays; the
    longest texts come first (a batch that does not fit in memory fails at once, not at the end).
    The sort is stable, so equal lengths keep input order and the batching is deterministic.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    if max_tokens is None:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    batches, start = [], 0
    while start < len(order):
        # sorted longest first: the first text of a batch sets its padded width
        size = max(1, min(batch_size, max_tokens // max(int(lengths[order[start]]), 1)))
        batches.append(order[start : start + size])
        start += size
    return batches


def torch_device(device: str) -> Any:
    """``"auto"`` | ``"cpu"`` | ``"cuda"`` -> a ``torch.device``; ``"cuda"`` without a GPU is an OptionError."""
    import torch

    if device not in DEVICES:
        raise OptionError("device", device, f"one of {', '.join(DEVICES)}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise OptionError("device", device, "no CUDA GPU is visible to torch; use 'auto' or 'cpu'")
    return torch.device(device)


def require_torch(what: str = "encoding with runtime='torch'") -> None:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise BraidError(
            f"{what} needs torch and transformers ({exc}); install them with: pip install 'braid[sparse]' "
            "(or 'braid[dense]')"
        ) from None


def read_json(path: Path | None, what: str) -> Any:
    """A JSON file of a model folder, None when ``path`` is None; BraidError when unreadable."""
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BraidError(f"{path}: unreadable {what} ({exc})") from None


def model_config(ref: ModelRef, argument: str = "model") -> dict:
    """The model's ``config.json`` as a dict (read directly: no transformers import)."""
    cfg = read_json(ref.file("config.json"), "model config.json")
    if not isinstance(cfg, dict):
        raise BraidError(f"{argument}={ref.name!r}: no readable config.json{'' if cfg is None else ' (not a JSON object)'}")
    return cfg


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------
def _token_text(value: Any) -> str | None:
    """A special token as written in tokenizer_config.json: a string or an AddedToken dict."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


class FastTokenizer:
    """A model's tokenizer run by the Rust ``tokenizers`` library, read from its ``tokenizer.json``.

    Gives what the encoders need and nothing else: model inputs truncated to ``max_length`` with
    special tokens, plain token ids without them, the vocabulary, the special and padding ids. A
    folder without ``tokenizer.json`` (``vocab.txt`` only) is converted once through transformers.
    Thread-safe: the underlying tokenizers are configured when made and never changed afterwards
    (one per truncation length), so concurrent calls cannot see each other's settings.
    """

    def __init__(self, ref: ModelRef, argument: str = "model"):
        from tokenizers import Tokenizer

        path = ref.file("tokenizer.json")
        if path is not None:
            try:
                tok = Tokenizer.from_file(str(path))
            except Exception as exc:  # noqa: BLE001 - the Rust error types are not exported
                raise BraidError(f"{argument}={ref.name!r}: cannot read {path} ({exc})") from None
        else:
            tok = self._convert(ref, argument)
        tok.no_padding()  # a tokenizer.json may carry a saved padding/truncation setting (MiniLM's: 128)
        tok.no_truncation()
        self._plain = tok
        self._truncated: dict[int, Any] = {}
        self._lock = threading.Lock()
        cfg = read_json(ref.file("tokenizer_config.json"), "tokenizer_config.json") or {}
        special_map = read_json(ref.file("special_tokens_map.json"), "special_tokens_map.json") or {}
        self._vocab: dict[str, int] | None = None  # built on first use: 30 ms for a 30k vocabulary
        special = {i for i, t in tok.get_added_tokens_decoder().items() if getattr(t, "special", False)}
        for source in (cfg, special_map):
            for key, value in source.items() if isinstance(source, dict) else ():
                if key.endswith("_token") or key == "additional_special_tokens":
                    for item in value if isinstance(value, list) else [value]:
                        text = _token_text(item)
                        token_id = tok.token_to_id(text) if text is not None else None
                        if token_id is not None:
                            special.add(token_id)
        self.special_ids: list[int] = sorted(special)
        pad = _token_text(cfg.get("pad_token")) or _token_text(special_map.get("pad_token"))
        pad_id = tok.token_to_id(pad) if pad is not None else None
        self.pad_id: int = pad_id if pad_id is not None else 0
        self.padding_side: str = cfg.get("padding_side") if cfg.get("padding_side") in ("left", "right") else "right"
        self.truncation_side: str = cfg.get("truncation_side") if cfg.get("truncation_side") in ("left", "right") else "right"

    @staticmethod
    def _convert(ref: ModelRef, argument: str) -> Any:
        from tokenizers import Tokenizer

        require_torch("a model folder without tokenizer.json")
        from transformers import AutoTokenizer

        hf = ref.load(AutoTokenizer, argument, what="tokenizer")
        backend = getattr(hf, "backend_tokenizer", None)
        if backend is None:
            raise BraidError(f"{argument}={ref.name!r}: its tokenizer has no fast (Rust) version; braid needs one")
        return Tokenizer.from_str(backend.to_str())

    @property
    def vocab(self) -> dict[str, int]:
        """Token string -> id (added tokens included); read-only by convention (see :meth:`get_vocab`)."""
        if self._vocab is None:
            self._vocab = self._plain.get_vocab(with_added_tokens=True)
        return self._vocab

    def get_vocab(self) -> dict[str, int]:
        """Token string -> id (added tokens included), a copy."""
        return dict(self.vocab)

    def _with_truncation(self, max_length: int | None) -> Any:
        if max_length is None:
            return self._plain
        tok = self._truncated.get(max_length)
        if tok is None:
            with self._lock:
                tok = self._truncated.get(max_length)
                if tok is None:
                    from tokenizers import Tokenizer

                    tok = Tokenizer.from_str(self._plain.to_str())
                    tok.enable_truncation(max_length, direction=self.truncation_side)
                    self._truncated[max_length] = tok
        return tok

    def encode(self, texts: Sequence[str], max_length: int | None, add_special_tokens: bool = True) -> list:
        """``tokenizers.Encoding`` per text (``.ids``, ``.type_ids``, ``.attention_mask``), truncated to
        ``max_length`` tokens (special tokens included; None: no truncation)."""
        if len(texts) == 1:  # the Rust batch call costs a thread-pool round trip for one text
            # a text that fits needs no truncation: the plain tokenizer gives the same encoding, and a
            # one-shot query never builds a truncated copy (parsing one costs ~40 ms)
            got = self._plain.encode(texts[0], add_special_tokens=add_special_tokens)
            if max_length is None or len(got.ids) <= max_length:
                return [got]
            return [self._with_truncation(max_length).encode(texts[0], add_special_tokens=add_special_tokens)]
        tok = self._with_truncation(max_length)
        return tok.encode_batch(list(texts), add_special_tokens=add_special_tokens)

    def token_ids(self, texts: Sequence[str], max_length: int | None = None) -> list[np.ndarray]:
        """Token ids of each text without special tokens added, int64, truncated to ``max_length`` ids.

        Cut from the untruncated encoding (the ids truncation would keep, at the tokenizer's side): no
        truncated copy of the tokenizer is made for this (parsing one costs ~40 ms)."""
        out = [np.array(e.ids, dtype=np.int64) for e in self.encode(texts, None, add_special_tokens=False)]
        if max_length is None:
            return out
        if self.truncation_side == "left":
            return [ids[-max_length:] if ids.shape[0] > max_length else ids for ids in out]
        return [ids[:max_length] for ids in out]


# --------------------------------------------------------------------------------------------
# The backbone: tokenizer + model + head, on one of two runtimes
# --------------------------------------------------------------------------------------------
class Head(Protocol):
    """What an encoder puts on the transformer: the same computation in both runtimes.

    ``key``: names the head and its settings (part of the ONNX cache key); ``loader``: the
    transformers Auto class of the model (``"AutoModel"``, ``"AutoModelForMaskedLM"``);
    ``max_batch_tokens``: padded tokens per batch at most (None: no limit) when a batch's
    intermediate tensors grow with it (SPLADE's (batch, length, vocab) logits). ``cpu_documents``:
    the runtime ``runtime="auto"`` encodes documents with on a CPU (the one measured faster for
    this head in ``docs/benchmarks/encoders.md``; queries always take ONNX there).
    ``graph(model, probe)``: a ``torch.nn.Module`` taking the model inputs it is given (input_ids,
    attention_mask[, token_type_ids]) and returning float32 (batch, dim): exported to ONNX.
    ``torch_forward(model, probe)``: the function the torch runtime calls on a dict of tensors,
    returning (batch, dim) (may be a faster equivalent of ``graph``). ``probe``: a small padded
    batch of tensors the head may use to check itself once.
    """

    key: str
    loader: str
    max_batch_tokens: int | None
    cpu_documents: str

    def graph(self, model: Any, probe: dict) -> Any: ...

    def torch_forward(self, model: Any, probe: dict) -> Callable[[dict], Any]: ...


PROBE_TEXTS = ("a short probe text", "probe")


class TransformerBackbone:
    """A tokenizer plus a model with its head, fed in length-sorted batches, on torch or ONNX Runtime.

    ``head``: see :class:`Head`. The model is loaded on first use, so constructing an encoder is
    cheap and fails early only on the model reference (:func:`braid.encoders.resolve.resolve_model`).
    Safe to call from several threads: loading happens once under a lock, and neither runtime
    changes any state during a forward pass (ONNX Runtime sessions allow concurrent ``run``).
    """

    def __init__(self, model: str | ModelRef, options: RuntimeOptions, head: Head, argument: str = "model"):
        self.ref: ModelRef = model if isinstance(model, ModelRef) else resolve_model(model, argument=argument)
        self.options = options
        self.head = head
        self._argument = argument
        self._lock = threading.RLock()
        self._runtimes: dict[str, str] = {}
        self._tokenizer: FastTokenizer | None = None
        self._config: dict | None = None
        self._model = None  # torch runtime: the transformers model
        self._torch_forward: Callable | None = None
        self._device = None
        self._session = None  # onnx runtime: the InferenceSession
        self._session_inputs: tuple[str, ...] = ()
        self.graph_path: Path | None = None

    # -- loading -----------------------------------------------------------------------------
    def runtime_for(self, kind: str) -> str:
        """``"torch"`` or ``"onnx"``: what runs the model for texts of ``kind`` (``"query"`` or ``"document"``)."""
        got = self._runtimes.get(kind)
        if got is None:
            got = self._runtimes[kind] = resolve_runtime(self.options, kind, self.head.cpu_documents)
        return got

    @property
    def runtime(self) -> str:
        """The runtime of documents (what an index build records); queries: :meth:`runtime_for`."""
        return self.runtime_for("document")

    def runtime_label(self, kind: str) -> str:
        """What runs texts of ``kind``, as ``--runtime`` spells it (``"torch"``, ``"onnx"``, ``"onnx-int8"``)."""
        return runtime_label(self.runtime_for(kind), self.options.precision)

    @property
    def tokenizer(self) -> FastTokenizer:
        if self._tokenizer is None:
            with self._lock:
                if self._tokenizer is None:
                    self._tokenizer = FastTokenizer(self.ref, self._argument)
        return self._tokenizer

    @property
    def config(self) -> dict:
        """The model's config.json."""
        if self._config is None:
            self._config = model_config(self.ref, self._argument)
        return self._config

    @property
    def model(self) -> Any:
        """The transformers model (torch runtime; loading it with runtime='onnx' loads torch anyway)."""
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._load_torch()
        return self._model

    def _load_torch(self) -> None:
        require_torch()
        import torch
        import transformers

        if self.options.threads is not None:
            torch.set_num_threads(self.options.threads)
        device = torch_device(self.options.device)
        loader = getattr(transformers, self.head.loader)
        model = self.ref.load(loader, self._argument, what="model")
        model.eval()
        model.to(device)
        probe = {k: torch.from_numpy(v).to(device) for k, v in self.probe_inputs(_model_input_names(model)).items()}
        self._device = device
        with torch.inference_mode():
            self._torch_forward = self.head.torch_forward(model, probe)
        self._model = model

    def use_torch(self, why: str) -> None:
        """Run on torch from now on (the model is being trained: an exported graph would not see the new weights).

        ``why`` names the caller for the error raised when ``options`` asked for ONNX or int8.
        """
        if self.options.runtime == "onnx" or self.options.precision == "int8":
            raise OptionError("runtime", self.options.runtime if self.options.runtime == "onnx" else "onnx-int8",
                              f"{why} runs the torch model; make the encoder with runtime='torch' or 'auto'")
        with self._lock:
            self._runtimes = {"query": "torch", "document": "torch"}
            self._session = None

    def hf_tokenizer(self) -> Any:
        """The model's transformers tokenizer (for writing a model folder; encoding uses :attr:`tokenizer`)."""
        require_torch("writing a model folder")
        from transformers import AutoTokenizer

        return self.ref.load(AutoTokenizer, self._argument, what="tokenizer")

    @property
    def device(self) -> Any:
        """The torch device of the model (torch runtime)."""
        self.model  # noqa: B018 - loads the model and sets the device
        return self._device

    @property
    def session(self) -> Any:
        """The ONNX Runtime session (onnx runtime), exporting the graph on first use of this model."""
        if self._session is None:
            with self._lock:
                if self._session is None:
                    from braid.encoders.onnx_export import load_session

                    path, session = load_session(self, self.options)
                    self._session_inputs = tuple(i.name for i in session.get_inputs())
                    self.graph_path = path
                    self._session = session
        return self._session

    def probe_inputs(self, names: Sequence[str]) -> dict:
        """A small padded batch (:data:`PROBE_TEXTS`) as int64 numpy arrays, keyed by the input ``names``."""
        encs = self.tokenizer.encode(list(PROBE_TEXTS), self.options.max_length)
        lengths = np.array([len(e.ids) for e in encs], dtype=np.int64)
        return self._pad(encs, np.arange(len(encs)), lengths, names)

    # -- running -----------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> list:
        """``tokenizers.Encoding`` per text, special tokens added, truncated to ``max_length``."""
        return self.tokenizer.encode(texts, self.options.max_length)

    def _pad(self, encs: list, positions: np.ndarray, lengths: np.ndarray, names: Sequence[str]) -> dict:
        if len(positions) == 1:  # one text: its own arrays, no padding
            e = encs[int(positions[0])]
            out = {"input_ids": np.array([e.ids], dtype=np.int64), "attention_mask": np.ones((1, len(e.ids)), dtype=np.int64)}
            if "token_type_ids" in names:
                out["token_type_ids"] = np.array([e.type_ids], dtype=np.int64)
            return out
        width = int(lengths[positions].max())
        left = self.tokenizer.padding_side == "left"
        ids = np.full((len(positions), width), self.tokenizer.pad_id, dtype=np.int64)
        mask = np.zeros((len(positions), width), dtype=np.int64)
        types = np.zeros((len(positions), width), dtype=np.int64) if "token_type_ids" in names else None
        for row, p in enumerate(positions):
            e = encs[p]
            n = len(e.ids)
            cols = slice(width - n, width) if left else slice(0, n)
            ids[row, cols] = e.ids
            mask[row, cols] = 1
            if types is not None:
                types[row, cols] = e.type_ids
        out = {"input_ids": ids, "attention_mask": mask}
        if types is not None:
            out["token_type_ids"] = types
        return out

    def input_names(self, runtime: str) -> tuple[str, ...]:
        if runtime == "onnx":
            self.session  # noqa: B018 - loads it
            return self._session_inputs
        return _model_input_names(self.model)

    def forward(self, inputs: dict, runtime: str, nonzero: bool = False) -> Any:
        """One padded batch (int64 arrays or CPU tensors keyed by input name) -> the head's float32 (batch, dim) on ``runtime``.

        ``nonzero``: return the output's nonzero entries instead, ``(rows int64, cols int64, values float32)``
        in row-major order (what ``np.nonzero`` gives). On a GPU they are found on the device, so only those
        travel back: a SPLADE batch of 128 texts is 15.6 MB of float32 logits, its nonzeros about 0.4 MB.
        """
        if runtime == "onnx":
            out = self.session.run(None, inputs)[0]
            return _nonzero(out) if nonzero else out
        import torch

        device = self.device  # loads the model and its head function
        fn = self._torch_forward
        with torch.inference_mode(), self.autocast():
            tensors = {k: (v if isinstance(v, torch.Tensor) else torch.from_numpy(v)).to(device, non_blocking=device.type != "cpu")
                       for k, v in inputs.items()}  # fmt: skip
            out = fn(tensors).float()
            if not nonzero:
                return out.cpu().numpy()
            if device.type == "cpu":
                return _nonzero(out.numpy())
            where = torch.nonzero(out)  # (nnz, 2), row-major like np.nonzero
            values = out[where[:, 0], where[:, 1]]
            where, values = where.to(torch.int32).cpu().numpy(), values.cpu().numpy()  # int32: 12 bytes per entry back
        return where[:, 0].astype(np.int64), where[:, 1].astype(np.int64), values

    def autocast(self) -> contextlib.AbstractContextManager:
        import torch

        if self.options.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.options.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def collate(self, texts: Sequence[str]) -> dict:
        """One padded batch of ``texts`` in input order (the same tokenisation and padding as :meth:`run_batches`).

        Returns ``{"input_ids", "attention_mask"[, "token_type_ids"]}``: int64 torch tensors (B, L)
        on the device of the torch model, L the longest text's token count. For training, where
        the caller runs the model itself (with gradients); ``texts`` must not be empty. Always the
        torch model: an exported graph cannot be trained.
        """
        import torch

        texts = check_texts(texts)
        if not texts:
            raise OptionError("texts", "an empty list", "at least one text to make a batch of")
        encs = self.tokenize(texts)
        lengths = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs))
        names = _model_input_names(self.model)
        arrays = self._pad(encs, np.arange(len(encs)), lengths, names)
        device = self.device
        return {k: torch.from_numpy(v).to(device) for k, v in arrays.items()}

    def run_batches(
        self, texts: Sequence[str], kind: str = "document", on_batch: Callable[[int], None] | None = None, nonzero: bool = False
    ) -> Iterator[tuple[np.ndarray, Any]]:
        """Run model and head over ``texts`` (of ``kind``, which picks the runtime) in length-sorted batches.

        Yields ``(positions, outputs)`` per batch: ``positions`` int64 indices into ``texts``,
        ``outputs`` float32 (len(positions), dim), or with ``nonzero`` its nonzero entries as
        :meth:`forward` gives them (rows index ``positions``); callers put results back in input order.
        A text that tokenizes to nothing (no special tokens and no text) is left out of every batch.
        ``on_batch(n)``: called once the caller has taken a batch of ``n`` texts (progress
        reporting); the ``n`` add up to ``len(texts)``. Torch on a GPU takes the device pipeline
        (:data:`PIPELINE`): the same batches' outputs, tokenized and padded ahead of the device.
        """
        texts = check_texts(texts)
        if len(texts) == 0:
            return
        runtime = self.runtime_for(kind)
        if self._pipelined(runtime):
            yield from self._run_pipelined(texts, runtime, on_batch, nonzero)
            return
        encs = self.tokenize(texts)
        names = self.input_names(runtime)
        lengths = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs))
        max_tokens = self.head.max_batch_tokens if runtime == "onnx" else None
        for batch in length_sorted_batches(lengths, self.options.batch_size, max_tokens):
            positions = batch[lengths[batch] > 0]
            if len(positions):
                yield positions, self.forward(self._pad(encs, positions, lengths, names), runtime, nonzero)
            if on_batch is not None:
                on_batch(len(batch))

    def _pipelined(self, runtime: str) -> bool:
        if runtime != "torch" or PIPELINE == "off":
            return False
        return PIPELINE == "on" or self.device.type != "cpu"

    def _padded_batches(self, texts: list[str], names: Sequence[str], pin: bool) -> Iterator[tuple[np.ndarray, Any, int]]:
        """``(positions, padded inputs or None, batch size)`` per batch, :data:`PIPELINE_TEXTS` texts at a time.

        Length-sorted within each slice of texts (so the first batch is ready after one slice, not after
        the whole input is tokenized); ``pin``: the inputs as page-locked CPU tensors (CUDA copies them
        asynchronously)."""
        for start in range(0, len(texts), PIPELINE_TEXTS):
            encs = self.tokenize(texts[start : start + PIPELINE_TEXTS])
            lengths = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs))
            for batch in length_sorted_batches(lengths, self.options.batch_size):
                positions = batch[lengths[batch] > 0]
                arrays = self._pad(encs, positions, lengths, names) if len(positions) else None
                if arrays is not None and pin:
                    import torch

                    arrays = {k: torch.from_numpy(v).pin_memory() for k, v in arrays.items()}
                yield positions + start, arrays, len(batch)

    def _run_pipelined(self, texts: list[str], runtime: str, on_batch: Callable[[int], None] | None, nonzero: bool):
        """:meth:`run_batches` with tokenizing and padding in a worker thread, up to :data:`PIPELINE_DEPTH` batches ahead."""
        names = self.input_names(runtime)
        pin = self.device.type == "cuda"
        ready: queue.Queue = queue.Queue(maxsize=PIPELINE_DEPTH)
        stop = threading.Event()
        done = object()

        def put(item: Any) -> bool:
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for item in self._padded_batches(texts, names, pin):
                    if not put(item):
                        return
                put(done)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
                put(exc)

        worker = threading.Thread(target=produce, name="braid-tokenize", daemon=True)
        worker.start()
        try:
            while True:
                item = ready.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                positions, arrays, n = item
                if len(positions):
                    yield positions, self.forward(arrays, runtime, nonzero)
                if on_batch is not None:
                    on_batch(n)
        finally:
            stop.set()
            worker.join()


def _nonzero(dense: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, cols, values)`` of a 2-d array's nonzero entries, row-major."""
    r, c = np.nonzero(dense)
    return r.astype(np.int64, copy=False), c.astype(np.int64, copy=False), dense[r, c]


def _model_input_names(model: Any) -> tuple[str, ...]:
    """The model inputs braid feeds that ``model.forward`` accepts (token_type_ids only where it has them)."""
    import inspect

    params = inspect.signature(model.forward).parameters
    return tuple(n for n in MODEL_INPUTS if n in params)
