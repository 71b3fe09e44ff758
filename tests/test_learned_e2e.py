"""End to end with the real models on a small shared collection (adi, 82 documents).

Uses ../shared/models (skipped when absent). Checks: the blocked index's default approximate search
equals exact search on this corpus; a rebuild with --overwrite reuses the encoded vectors instead of
re-encoding. The scores of every retriever and built-in pipeline on adi through `braid eval` are
golden numbers in tests/golden/2cr.yaml (tests/test_golden.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from braid.cli.main import main
from braid.retrieval.searcher import Searcher


@pytest.fixture(scope="module")
def adi_index(tmp_path_factory, shared):
    if not (shared / "models" / "splade-tiny").is_dir():
        pytest.skip("real models not available")
    root = tmp_path_factory.mktemp("adi")
    runner = CliRunner()
    res = runner.invoke(
        main,
        ["index", str(shared / "data" / "adi"), "--out", str(root / "adi"), "--retrievers", "bm25,sparse,dense", "-q"],
    )
    assert res.exit_code == 0, res.output
    return root


@pytest.mark.slow
def test_sparse_default_matches_exact(adi_index, shared):
    searcher = Searcher(adi_index / "adi")
    from braid.data.queries import read_queries

    queries = list(read_queries(shared / "data" / "adi" / "queries.jsonl").values())
    retriever = searcher.retriever("sparse")
    vectors = retriever.encode_queries(queries)
    approx = retriever.search_vectors(vectors, k=10)
    exact = retriever.search_vectors(vectors, k=10, exact=True)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(approx.docnos, exact.docnos)])
    assert overlap >= 0.97


@pytest.mark.slow
def test_rescoring_pipeline_and_vector_reuse(adi_index, shared, tmp_path):
    searcher = Searcher(adi_index / "adi")
    path = tmp_path / "rescore.toml"
    path.write_text('name = "r"\n[[retriever]]\nname = "sparse-if"\n[[rescore]]\nstage = "sparse"\ntop_n = 20\nweight = 1.0\n')
    res = searcher.batch_search(["information retrieval evaluation"], k=10, retriever=str(path))
    exact = searcher.retriever("sparse")
    full = exact.search(["information retrieval evaluation"], k=200)
    # weight 1.0: the top 20 of the inference-free list re-ordered by exact SPLADE scores
    head = set(searcher.batch_search(["information retrieval evaluation"], k=20, retriever="sparse-if").doc_ids[0])
    order = [searcher.doc_ids[d] for d in full.docnos[0] if searcher.doc_ids[d] in head][:10]
    assert res.doc_ids[0] == order
    logs = []
    from braid.retrieval.build.builder import BuildOptions, build_index

    build_index(
        shared / "data" / "adi", adi_index / "adi", BuildOptions(retrievers=("bm25", "sparse", "dense"), overwrite=True, progress=False),
        log=logs.append,
    )
    assert any("sparse: reusing the encoded vectors" in m for m in logs)
    assert any("dense: reusing the encoded vectors" in m for m in logs)


@pytest.mark.slow
def test_runtime_is_recorded_and_onnx_queries_rank_as_torch(adi_index, shared):
    """The manifest records what encoded the documents; a search's recipe what encoded its queries; fp32 ONNX
    queries give torch's hybrid top 10 on every adi query (the quality check behind ONNX as the CPU default)."""
    pytest.importorskip("onnxruntime")
    from braid.data.errors import OptionError
    from braid.data.queries import read_queries
    from braid.encoders.base import RuntimeOptions, resolve_runtime
    from braid.encoders.dense import PoolingHead
    from braid.encoders.sparse import SpladeHead

    components = Searcher(adi_index / "adi").manifest["components"]
    # built with --runtime auto: each encoder's document runtime as auto resolves it on this machine
    assert components["sparse"]["encoder"]["runtime"] == resolve_runtime(RuntimeOptions(), "document", SpladeHead.cpu_documents)
    assert components["dense"]["encoder"]["runtime"] == resolve_runtime(RuntimeOptions(), "document", PoolingHead.cpu_documents)
    queries = read_queries(shared / "data" / "adi" / "queries.jsonl")
    ranked = {}
    for runtime in ("torch", "onnx"):
        searcher = Searcher(adi_index / "adi", runtime=runtime)
        assert searcher.recipe("hybrid")["runtime"] == {"sparse": runtime, "dense": runtime}
        assert searcher.recipe("dense", nprobe=None)["runtime"] == {"dense": runtime}
        assert "runtime" not in searcher.recipe("bm25") and "runtime" not in searcher.recipe("sparse-if")
        ranked[runtime] = searcher.batch_search(queries, k=10, retriever="hybrid").doc_ids
    assert ranked["onnx"] == ranked["torch"]
    # query_threads reaches every query encoder's session (braid serve's one thread per concurrent search), same ranking
    one = Searcher(adi_index / "adi", runtime="onnx", query_threads=1)
    assert one.batch_search(queries, k=10, retriever="hybrid").doc_ids == ranked["onnx"]
    for name in ("sparse", "dense"):
        backbone = one.retriever(name).encoder.backbone
        assert backbone.options.threads == 1 and backbone.session.get_session_options().intra_op_num_threads == 1
    with pytest.raises(OptionError, match="query_threads"):
        Searcher(adi_index / "adi", query_threads=0)
    assert Searcher(adi_index / "adi", runtime="onnx-int8").recipe("sparse")["runtime"] == {"sparse": "onnx-int8"}
    with pytest.raises(OptionError, match="runtime"):
        Searcher(adi_index / "adi", runtime="gpu")
