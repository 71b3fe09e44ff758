"""Settings of ``braid train sparse`` (:class:`SparseTrainConfig`), saved with the model and in checkpoints."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from braid.data.errors import OptionError, check_finite, check_int, check_positive_int

SOURCES = ("supervised", "corpus")
LOSSES = ("kl", "margin-mse", "contrastive")
FLOPS = ("idf", "plain", "none")
PSEUDO_KINDS = ("title", "sentence")
DEVICES = ("auto", "cpu", "cuda")
SCALE_FROM = ("fixed", "student")
# Settings that may change when a checkpoint is resumed: checkpoint_every and device do not change what a step
# computes; max_steps lengthens or shortens a run (the learning-rate schedule of the remaining steps follows it).
RESUMABLE_CHANGES = ("checkpoint_every", "device", "max_steps")
# Settings added after checkpoints existed, at the value that reproduces the runs before them: left out of run
# fingerprints at that value, so those checkpoints (and their mined examples) still resume.
ADDED_AT_DEFAULT = (("teacher_scale_from", "fixed"), ("exclude_source", False))


@dataclass(frozen=True)
class SparseTrainConfig:
    """How an inference-free document encoder is trained on an index (``braid train sparse``).

    Training queries: ``source="supervised"`` (the qrels of a training split; each example is a
    judged (query, relevant document) pair plus hard negatives drawn from the index's hybrid
    ranking) or ``"corpus"`` (no labels: pseudo-queries cut from the documents, ``pseudo_kinds``
    titles and/or single sentences (the inverse cloze task), at most ``max_queries`` of them,
    labelled by the teacher only; ``exclude_source``: the document a pseudo-query was cut from is
    never one of its candidates, so the student learns from the teacher's ranking of the other
    documents rather than from the verbatim copy of the query in its source, as the inverse cloze task removes the
    sentence from its context). ``candidates``: documents per example (for supervised, one
    positive + ``candidates - 1`` negatives); they are drawn from the top ``candidate_depth`` of
    the index's hybrid ranking (corpus-only: its top ``candidates // 2`` plus a sample of the rest).

    Teacher (``loss`` ``kl`` or ``margin-mse``): ``teachers``, retrievers of the index (``"hybrid"``:
    those of its default hybrid, e.g. bm25 + sparse + dense), each scored over an example's
    candidates (top ``teacher_depth`` of that retriever; a candidate below it counts as its lowest
    listed score), min-max normalised per query and per teacher, averaged, times
    ``teacher_scale`` (Geng et al. 2024, "Towards Competitive Search Relevance for Inference-Free
    Learned Sparse Retrievers": normalise, then aggregate). ``positive_boost`` (supervised): a
    judged positive's normalised score is raised to 1, the best any candidate can have.
    ``teacher_scale`` sets how peaked the teacher's distribution is against the student's raw
    scores (IDF-weighted dot products; on scifact splade-tiny's spread over a query's 8 candidates
    is about 29, median): a teacher much flatter than the student makes KL shrink every document
    weight (scale 10 on scifact: 248 -> 39 nonzeros per document, nDCG@10 0.65 -> 0.49), so the
    default 30 matches the spreads (OpenSearch's ensemble trainer also scales by 30).
    ``teacher_scale_from="student"`` scales each example by the untrained student's own spread
    instead (max - min of the index's ``sparse-if`` scores over that example's candidates, the
    untrained student when the index's sparse model is the base; ``teacher_scale`` where fewer
    than two are listed or they tie): one fixed scale is too peaked for some queries and too flat
    for others (on scifact the spread ranges from under 5 to over 50), and KL then changes every
    document weight of a query's candidates to fix the scale rather than the order.
    ``loss="contrastive"``: no teacher, InfoNCE over the candidates (positive vs hard negatives
    and the batch's other documents). ``kl_temperature``: of the KL loss (student and teacher scores both divided by
    it, the loss times its square). At 1 a near one-hot teacher (a judged positive at the top) makes flattening every
    score the cheapest way down the loss: on scifact the documents lost 2.7x their nonzeros and 0.054 dev nDCG@10 in 60
    steps; 4 was the best of the settings tried on a dev split (docs/benchmarks/training.md, round 3); sentence-
    transformers' own default is 2 for the same reason.

    Sparsity: ``flops="idf"`` the IDF-aware FLOPS penalty (:mod:`.loss`), ``"plain"`` SPLADE's
    FLOPS, ``"none"``; weight ``flops_weight``; ``idf_floor``: IDF below it counts as it in the
    IDF-aware penalty (bounds the pressure on stop words).

    Optimisation: ``epochs`` (or ``max_steps`` > 0, which wins), ``batch_size`` examples per step,
    AdamW at ``lr`` with ``warmup`` fraction of linear warm-up then linear decay; ``max_length``:
    document tokens in training (the saved model encodes ``encode_max_length``);
    ``query_max_length``: query tokens. ``train_query_weights``: also train the query-side token
    weights (initialised from the IDF, projected onto >= 0 after each step) at ``query_lr`` (Li-LSR-style). ``seed``: everything random.
    ``checkpoint_every``: steps between checkpoints. ``device``: auto (CUDA when present), cpu, cuda.

    Defaults: a scifact-sized run from splade-tiny fits in 45 minutes on 2 CPU cores
    (docs/benchmarks/training.md).
    """

    source: str = "supervised"
    loss: str = "kl"
    teachers: str = "hybrid"
    candidates: int = 8
    candidate_depth: int = 30
    teacher_depth: int = 200
    teacher_scale: float = 30.0
    teacher_scale_from: str = "fixed"
    positive_boost: bool = True
    kl_temperature: float = 4.0
    flops: str = "idf"
    flops_weight: float = 1e-3
    idf_floor: float = 0.5
    pseudo_kinds: str = "title,sentence"
    exclude_source: bool = False
    max_queries: int = 2000
    epochs: int = 2
    max_steps: int = 0
    batch_size: int = 8
    lr: float = 5e-5
    warmup: float = 0.1
    max_length: int = 128
    encode_max_length: int = 256
    query_max_length: int = 64
    train_query_weights: bool = False
    query_lr: float = 3e-2  # round 6 (docs/benchmarks/training.md): at 1e-3 Adam moves an IDF weight (1-10) by <= 0.06 in 60 steps
    seed: int = 42
    checkpoint_every: int = 50
    device: str = "auto"

    def __post_init__(self) -> None:
        for name, allowed in (("source", SOURCES), ("loss", LOSSES), ("flops", FLOPS), ("device", DEVICES),
                              ("teacher_scale_from", SCALE_FROM)):
            if getattr(self, name) not in allowed:
                raise OptionError(name, getattr(self, name), f"one of {', '.join(allowed)}")
        for name, low in (("candidates", 2), ("candidate_depth", 2), ("teacher_depth", 1), ("max_queries", 1), ("epochs", 1), ("max_steps", 0),
                          ("batch_size", 1), ("max_length", 8), ("encode_max_length", 8), ("query_max_length", 2), ("seed", 0), ("checkpoint_every", 1)):
            check_int(name, getattr(self, name), low=low)
        if self.candidates > self.candidate_depth:
            raise OptionError("candidates", self.candidates, f"at most candidate_depth ({self.candidate_depth})")
        for name in ("lr", "query_lr"):
            check_finite(name, getattr(self, name), low=0, low_open=True)
        for name in ("flops_weight", "idf_floor"):
            check_finite(name, getattr(self, name), low=0)
        for name in ("teacher_scale", "kl_temperature"):
            check_finite(name, getattr(self, name), low=0, low_open=True)
        if not isinstance(self.warmup, (int, float)) or isinstance(self.warmup, bool) or not math.isfinite(self.warmup) or not 0 <= self.warmup < 1:
            raise OptionError("warmup", self.warmup, "a fraction in [0, 1)")
        kinds = self.pseudo_kind_list
        if not kinds or any(k not in PSEUDO_KINDS for k in kinds):
            raise OptionError("pseudo_kinds", self.pseudo_kinds, f"comma-separated, from {', '.join(PSEUDO_KINDS)}")
        if self.exclude_source and (self.source != "corpus" or not self.distills):
            raise OptionError("exclude_source", True, f"a corpus-only distillation setting (source corpus, loss kl or margin-mse); here source {self.source}, loss {self.loss}")
        if not isinstance(self.teachers, str) or not self.teachers.strip():
            raise OptionError("teachers", self.teachers, "'hybrid' or comma-separated retriever names (bm25, sparse, dense, ...)")
        check_positive_int("batch_size", self.batch_size)

    @property
    def pseudo_kind_list(self) -> list[str]:
        return [k.strip() for k in str(self.pseudo_kinds).split(",") if k.strip()]

    @property
    def distills(self) -> bool:
        return self.loss != "contrastive"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SparseTrainConfig:
        if not isinstance(d, Mapping):
            raise OptionError("sparse training config", d, "a dict")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise OptionError("sparse training config", sorted(unknown), f"known keys: {', '.join(sorted(known))}")
        return cls(**dict(d))
