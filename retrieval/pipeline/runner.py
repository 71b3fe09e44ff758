"""Running a pipeline: first-stage retrievers -> fusion -> (PRF -> fusion again) -> rescoring stages.

The runner only sequences library functions: :func:`braid.retrieval.pipeline.fusion.fuse`, the PRF
stages of :data:`braid.retrieval.pipeline.prf.PRF_STAGES` through
:func:`braid.retrieval.pipeline.prf.interpolate_prf_interpolate` (Li et al., SIGIR 2022: fuse the
first-round lists, take feedback documents from the fused ranking, run each PRF retriever again with
its expanded query, fuse again), and the rescoring stages of
:data:`braid.retrieval.pipeline.rerank.RESCORE_STAGES` through
:func:`braid.retrieval.pipeline.rerank.interpolate_head`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from braid.data.errors import OptionError
from braid.index.hits import Hits
from braid.retrieval import retrievers as registry
from braid.retrieval.pipeline.spec import BUILTIN, Pipeline, builtin_pipeline, read_pipeline


def load_pipeline(spec, searcher) -> "PipelineRunner":
    """A runner for ``spec``: a :class:`Pipeline`, a built-in name or a TOML path."""
    if isinstance(spec, Pipeline):
        return PipelineRunner(spec, searcher)
    if str(spec) in BUILTIN:
        return PipelineRunner(builtin_pipeline(str(spec), searcher.available_retrievers()), searcher)
    if not str(spec).endswith(".toml") and not Path(spec).exists():
        raise OptionError(
            "--retriever/--pipeline",
            str(spec),
            "known retrievers: " + ", ".join(registry.RETRIEVERS) + "; pipelines: a .toml file or " + ", ".join(BUILTIN),
        )
    return PipelineRunner(read_pipeline(spec), searcher)


@dataclass(frozen=True)
class PipelineExplanation:
    """A pipeline's hits with their explanation. ``hits``: the answer (n_queries, k); ``fused``: the
    final fusion before rescoring (its scores are the ones ``fusion`` decomposes; the same as
    ``hits`` when ``rescored`` is False); ``lists``: one Hits per retriever step, as fused last;
    ``names``/``prf``: each step's retriever and whether its list is the PRF round's;
    ``fusion``: :class:`braid.retrieval.pipeline.fusion.FusionExplanation` of ``hits.docnos``."""

    hits: Hits
    fused: Hits
    lists: list
    names: list
    prf: list
    fusion: object
    rescored: bool


class PipelineRunner:
    """Runs a Pipeline over a Searcher's retrievers; exposes the retriever interface (``name``, ``search``)."""

    def __init__(self, pipeline: Pipeline, searcher):
        from braid.retrieval.pipeline.rerank import RESCORE_STAGES

        self.pipeline = pipeline
        self.searcher = searcher
        self.name = pipeline.name
        for step in pipeline.retrievers:
            searcher.retriever(step.name)  # fail early on a missing component
            spec = registry.get(step.name)
            spec.check_knobs(step.knobs, searcher.components.get(spec.component), where=f"{pipeline.name}.{step.name}.")
        for stage in pipeline.rescore:
            component = RESCORE_STAGES[stage["stage"]].component
            if component is not None and component not in searcher.components:
                raise OptionError("rescore.stage", stage["stage"], f"{searcher.index_dir} has no {component!r} component")

    def fuse(self, lists: list[Hits], k: int) -> Hits:
        """The pipeline's fusion of one list per retriever step, top ``k`` (one list: itself, cut to k)."""
        from braid.retrieval.pipeline.fusion import fuse

        if len(lists) == 1:
            return Hits(lists[0].docnos[:, :k], lists[0].scores[:, :k])
        params = {key: v for key, v in self.pipeline.fusion.items() if key != "method"}
        weights = [s.weight for s in self.pipeline.retrievers]
        return fuse(lists, self.pipeline.fusion["method"], k=k, weights=weights, **params)

    def search(self, queries: Sequence[str], k: int, threads: int = 1, exclude=None, allow=None, **knobs) -> Hits:
        """``allow``: bool over docnos (a filter), passed to every retriever and PRF search."""
        return self._run(queries, k, threads, exclude, allow, knobs, None)

    def explain(self, queries: Sequence[str], k: int, threads: int = 1, exclude=None, allow=None, **knobs) -> "PipelineExplanation":
        """:meth:`search`, and how its fusion scored each hit: the lists fused last (after PRF when the
        pipeline has it) and :func:`braid.retrieval.pipeline.fusion.explain` of the hits over them."""
        from braid.retrieval.pipeline.fusion import explain

        trace: dict = {}
        hits = self._run(queries, k, threads, exclude, allow, knobs, trace)
        lists = trace["lists"]
        if len(lists) == 1:  # no fusion: the list is the result; its own score is the whole of it
            method, params, weights = "linear", {"norm": "none", "missing": "zero"}, [1.0]
        else:
            method = self.pipeline.fusion["method"]
            params = {key: v for key, v in self.pipeline.fusion.items() if key != "method"}
            weights = [s.weight for s in self.pipeline.retrievers]
        return PipelineExplanation(
            hits=hits,
            fused=trace["fused"],
            lists=lists,
            names=[s.name for s in self.pipeline.retrievers],
            prf=[bool(s.prf) for s in self.pipeline.retrievers],
            fusion=explain(lists, method, hits.docnos, weights, **params),
            rescored=bool(self.pipeline.rescore),
        )

    def _run(self, queries: Sequence[str], k: int, threads: int, exclude, allow, knobs: dict, trace: dict | None) -> Hits:
        from braid.retrieval.pipeline.prf import interpolate_prf_interpolate

        fuse = self.fuse
        if trace is not None:

            def fuse(lists: list[Hits], k: int) -> Hits:  # the last call is the final fusion
                trace["lists"] = list(lists)
                return self.fuse(lists, k)

        p = self.pipeline
        # Each retriever gives its step's depth (else the pipeline's) candidates, whatever k is: a pipeline is what its
        # spec says, so a larger k never deepens it (under `braid eval`'s k = 1000 a depth-100 pipeline stays depth 100).
        # The fused list holds up to max(depth, k) of the candidates' union; the answer is its head k.
        depth = p.depth
        fused_k = max(depth, k)
        names = [s.name for s in p.retrievers]
        per_step = registry.split_knobs(names, knobs, self.searcher.components)
        step_knobs = [{**s.knobs, **per_step[s.name]} for s in p.retrievers]
        if allow is not None:
            step_knobs = [{**kn, "allow": allow} for kn in step_knobs]
        first = [
            self.searcher.retriever(s.name).search(queries, k=s.depth or depth, threads=threads, exclude=exclude, **kn)
            for s, kn in zip(p.retrievers, step_knobs)
        ]
        if any(s.prf for s in p.retrievers):

            def second_stage(feedback: Hits) -> list[Hits]:
                out = []
                for step, hits, kn in zip(p.retrievers, first, step_knobs):
                    if not step.prf:
                        out.append(hits)
                        continue
                    source = feedback if step.prf.get("source", "fused") == "fused" else hits
                    out.append(self.prf(step, queries, source, depth, threads, exclude, kn))
                return out

            fb_depth = max(int(s.prf.get("fb_docs", 10)) for s in p.retrievers if s.prf)
            fused = interpolate_prf_interpolate(first, second_stage, k=fused_k, fb_docs=fb_depth, fuse=fuse)
        else:
            fused = fuse(first, fused_k)
        if trace is not None:
            trace["fused"] = fused
        for stage in p.rescore:
            fused = self.rescore(stage, queries, fused)
        return fused.head(k)

    def prf(self, step, queries: Sequence[str], feedback: Hits, k: int, threads: int = 1, exclude=None, knobs: dict | None = None) -> Hits:
        """The PRF stage of ``step`` (a RetrieverStep with ``prf``) given feedback documents: top ``k``."""
        from braid.retrieval.pipeline.prf import PRF_STAGES

        stage = PRF_STAGES[registry.get(step.name).prf[step.prf["method"]]]
        knobs = {**step.knobs, **(knobs or {})}  # may hold "allow" (a filter), which every stage's search takes
        return stage(self.searcher.retriever(step.name), queries, feedback, step.prf, k, threads, exclude, knobs)

    def rescore(self, stage: dict, queries: Sequence[str], hits: Hits) -> Hits:
        """One rescoring stage on the fused list: new scores for its top ``top_n``, interpolated in."""
        from braid.retrieval.pipeline.rerank import RESCORE_STAGES, interpolate_head

        top_n = min(int(stage["top_n"]), hits.k)
        new_scores = RESCORE_STAGES[stage["stage"]].scores(self.searcher, stage, queries, hits.docnos[:, :top_n])
        return interpolate_head(hits, top_n, new_scores, float(stage["weight"]))
