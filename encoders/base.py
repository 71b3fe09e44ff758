"""Mechanics shared by the sparse and dense encoders: options, device, batching by length, model loading.

Nothing here knows about pooling or vectors: :mod:`braid.encoders.sparse` and
:mod:`braid.encoders.dense` put a head on :class:`TransformerBackbone`. torch and transformers
are imported inside the functions that need them, never at module import.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from braid.data.errors import BraidError, OptionError, check_int, check_positive_int
from braid.encoders.resolve import ModelRef, resolve_model

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class RuntimeOptions:
    """How to run a model; none of these change what a text encodes to (beyond float rounding).

    ``max_length``: tokens per text after truncation (special tokens included); ``batch_size``:
    texts per forward pass (batches are formed from texts of similar length); ``device``:
    ``"auto"`` (CUDA when a GPU is present, else CPU), ``"cpu"`` or ``"cuda"``; ``precision``:
    ``"fp32"``, or ``"bf16"`` / ``"fp16"`` autocast; ``threads``: torch intra-op threads
    (process-wide setting; ``None`` leaves torch's default).
    """

    max_length: int = 256
    batch_size: int = 32
    device: str = "auto"
    precision: str = "fp32"
    threads: int | None = None

    def __post_init__(self) -> None:
        check_int("max_length", self.max_length, low=2)
        check_positive_int("batch_size", self.batch_size)
        if self.device not in DEVICES:
            raise OptionError("device", self.device, f"one of {', '.join(DEVICES)}")
        if self.precision not in PRECISIONS:
            raise OptionError("precision", self.precision, f"one of {', '.join(PRECISIONS)}")
        check_positive_int("threads", self.threads, allow_none=True)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RuntimeOptions":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise OptionError("runtime options", sorted(unknown), f"known keys: {', '.join(sorted(known))}")
        return cls(**d)


def check_texts(texts: Any, name: str = "texts") -> list[str]:
    """A sequence of str -> list[str]; OptionError naming ``name`` for a bare str or a non-str item."""
    if isinstance(texts, (str, bytes)):
        raise OptionError(name, "a single string", "a sequence of strings (wrap one text in a list)")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise OptionError(f"{name}[{i}]", type(t).__name__, "every text must be a str")
    return texts


def length_sorted_batches(lengths: Sequence[int] | np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Split positions ``0..n-1`` into batches of at most ``batch_size`` texts of similar length.

    ``lengths``: int (n,). Returns a list of int64 index arrays; the longest texts come first (a
    batch that does not fit in memory fails at once, not at the end). The sort is stable, so equal
    lengths keep input order and the batching is deterministic.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


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


def _require_torch() -> None:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise BraidError(
            f"encoding needs torch and transformers ({exc}); install them with: pip install 'braid[sparse]' "
            "(or 'braid[dense]')"
        ) from None


class TransformerBackbone:
    """A tokenizer plus a transformers model on a device, fed in length-sorted batches.

    ``model_loader(location, **kwargs)`` builds the model (e.g. ``AutoModelForMaskedLM.from_pretrained``).
    The model is loaded on first use, so constructing an encoder is cheap and fails early only on
    the model reference (:func:`braid.encoders.resolve.resolve_model`).
    """

    def __init__(self, model: str, options: RuntimeOptions, model_loader: str, argument: str = "model"):
        _require_torch()
        self.ref: ModelRef = resolve_model(model, argument=argument)
        self.options = options
        self._loader_name = model_loader
        self._argument = argument
        self._tokenizer = None
        self._model = None
        self._device = None

    # -- loading -----------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = self.ref.load(AutoTokenizer, self._argument, what="tokenizer")
        return self._tokenizer

    @property
    def model(self) -> Any:
        if self._model is None:
            import torch
            import transformers

            if self.options.threads is not None:
                torch.set_num_threads(self.options.threads)
            self._device = torch_device(self.options.device)
            loader = getattr(transformers, self._loader_name)
            model = self.ref.load(loader, self._argument, what="model")
            model.eval()
            model.to(self._device)
            self._model = model
        return self._model

    @property
    def device(self) -> Any:
        self.model  # noqa: B018 - loads the model and sets the device
        return self._device

    # -- running -----------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> dict:
        """Tokenize without padding, truncated to ``max_length``: ``{"input_ids": [[int]], ...}``."""
        return self.tokenizer(
            list(texts),
            truncation=True,
            max_length=self.options.max_length,
            padding=False,
            return_attention_mask=True,
        )

    def autocast(self) -> contextlib.AbstractContextManager:
        import torch

        if self.options.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.options.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _pad(self, enc: Any, positions: np.ndarray, keys: Sequence[str], lengths: np.ndarray) -> dict:
        """Rows ``positions`` of a tokenisation, padded to their longest on the tokenizer's padding side -> int64 tensors on the device."""
        import torch

        device = self.device
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = 0
        left = self.tokenizer.padding_side == "left"
        width = int(lengths[positions].max())
        batch = {}
        for key in keys:
            fill = pad_id if key == "input_ids" else 0
            arr = np.full((len(positions), width), fill, dtype=np.int64)
            for row, p in enumerate(positions):
                seq = enc[key][p]
                if left:
                    arr[row, width - len(seq) :] = seq
                else:
                    arr[row, : len(seq)] = seq
            batch[key] = torch.from_numpy(arr).to(device)
        return batch

    def _tokenized(self, texts: Sequence[str]) -> tuple[Any, list[str], np.ndarray]:
        enc = self.tokenize(texts)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        lengths = np.fromiter((len(ids) for ids in enc["input_ids"]), dtype=np.int64, count=len(texts))
        return enc, keys, lengths

    def collate(self, texts: Sequence[str]) -> dict:
        """One padded batch of ``texts`` in input order (the same tokenisation and padding as :meth:`run_batches`).

        Returns ``{"input_ids", "attention_mask"[, "token_type_ids"]}``: int64 tensors (B, L) on the
        device, L the longest text's token count. For training, where the caller runs the model
        itself (with gradients); ``texts`` must not be empty.
        """
        texts = check_texts(texts)
        if not texts:
            raise OptionError("texts", "an empty list", "at least one text to make a batch of")
        enc, keys, lengths = self._tokenized(texts)
        return self._pad(enc, np.arange(len(texts)), keys, lengths)

    def run_batches(
        self, texts: Sequence[str], head: Callable[[Any, Any], np.ndarray | list]
    ) -> Iterator[tuple[np.ndarray, Any]]:
        """Run the model over ``texts`` in length-sorted batches.

        ``head(model_inputs, model)`` maps one padded batch (a dict of tensors on the device) to
        per-text results (a sequence of length batch). Yields ``(positions, results)`` per batch,
        ``positions`` being int64 indices into ``texts``; callers put results back in input order.
        """
        import torch

        texts = check_texts(texts)
        if len(texts) == 0:
            return
        enc, keys, lengths = self._tokenized(texts)
        model = self.model
        for positions in length_sorted_batches(lengths, self.options.batch_size):
            batch = self._pad(enc, positions, keys, lengths)
            with torch.inference_mode(), self.autocast():
                results = head(batch, model)
            yield positions, results
