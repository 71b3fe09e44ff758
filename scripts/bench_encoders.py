"""Encoders on the CPU, side by side in one run: Braid's torch and ONNX paths (fp32, int8) and fastembed.

    flock -x /work/bench.lock .venv/bin/python scripts/bench_encoders.py [--docs 200] [--queries 100] \\
        [--threads 1] [--batch-size 32] [--json out.json] [--no-fastembed] [--only dense|sparse]

Same model files and same texts for every path. all-MiniLM-L6-v2: Braid ``DenseEncoder`` with
``runtime="torch"``, ``"onnx"`` (fp32) and ``"onnx"`` + ``precision="int8"``, and fastembed's
``TextEmbedding`` (Qdrant's ONNX embedding library) pointed at a plain ONNX export of the same local
model (``specific_model_path``: last hidden state out, fastembed pools and normalises; its
tokenizer_config says 256 tokens, the model's sentence-transformers limit, as for Braid).
splade-tiny: ``SparseEncoder`` with the three Braid paths (fastembed runs no SPLADE from a local
folder).

Per path: query latency (``--queries`` scifact test queries encoded one at a time, batch of one:
median wall µs and CPU µs per query), document throughput (the first ``--docs`` scifact documents,
title + " " + text, max length 256, one encode call after a warm-up; documents per CPU-second,
``time.process_time``, and per wall second), agreement with the torch path (cosine of each
document and query vector; min and mean), and retrieval quality: nDCG@10 of the 300 scifact test
queries encoded by that path, searched exactly against the shared document vectors
(``/work/shared/vectors/scifact``: a flat FAISS index of MiniLM, the sparse product for
splade-tiny), with the share of queries whose top-10 equals the torch path's.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_model  # scripts/machine.py (the scripts run as files)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED = Path(os.environ.get("BRAID_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")


def cosines(a, b):
    import numpy as np

    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(na * nb, 1e-30)


def export_for_fastembed(model_dir: Path, out: Path, max_length: int) -> Path:
    """A plain ONNX export of a sentence-transformers folder (last_hidden_state out) in the layout fastembed reads."""
    import torch
    from transformers import AutoModel

    out.mkdir(parents=True, exist_ok=True)
    model = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()

    class Hidden(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state

    ids = torch.ones((2, 8), dtype=torch.int64)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(Hidden(), (ids, ids, torch.zeros_like(ids)), str(out / "model.onnx"), input_names=names,
                          output_names=["last_hidden_state"], dynamic_axes={n: {0: "b", 1: "l"} for n in names + ["last_hidden_state"]},
                          opset_version=17, dynamo=False)
    for name in ("config.json", "tokenizer.json", "special_tokens_map.json", "vocab.txt"):
        if (model_dir / name).is_file():
            shutil.copy(model_dir / name, out / name)
    cfg = json.loads((model_dir / "tokenizer_config.json").read_text())
    cfg["model_max_length"] = max_length  # fastembed truncates at the tokenizer's limit (512 here); the model's is 256
    (out / "tokenizer_config.json").write_text(json.dumps(cfg))
    return out


def measure(name: str, encode_query, encode_docs, queries: list[str], docs: list[str], warm: list[str]) -> dict:
    """Latency (batch of one) and throughput of one path; returns the vectors too."""
    import numpy as np

    encode_docs(warm[:8])
    for q in queries[:5]:
        encode_query(q)
    times, qvecs = [], []
    c0 = time.process_time()
    for q in queries:
        t0 = time.perf_counter()
        qvecs.append(encode_query(q))
        times.append(time.perf_counter() - t0)
    cpu_q = (time.process_time() - c0) / len(queries)
    c0, t0 = time.process_time(), time.perf_counter()
    dvecs = encode_docs(docs)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    us = np.array(times) * 1e6
    row = {
        "path": name,
        "query_median_us": round(float(np.median(us)), 1),
        "query_p95_us": round(float(np.percentile(us, 95)), 1),
        "query_cpu_us": round(cpu_q * 1e6, 1),
        "docs_per_cpu_s": round(len(docs) / cpu, 2),
        "docs_per_s": round(len(docs) / wall, 2),
    }
    import scipy.sparse as sp

    stack = sp.vstack if sp.issparse(qvecs[0]) else np.vstack
    return {"row": row, "queries": stack(qvecs), "docs": dvecs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(SHARED / "data" / "scifact"))
    ap.add_argument("--vectors", default=str(SHARED / "vectors" / "scifact"))
    ap.add_argument("--splade", default=str(SHARED / "models" / "splade-tiny"))
    ap.add_argument("--dense", default=str(SHARED / "models" / "all-MiniLM-L6-v2"))
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", choices=("dense", "sparse"), default=None)
    ap.add_argument("--no-fastembed", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import numpy as np
    import scipy.sparse as sp
    import torch

    from braid.data.beir import BeirDataset
    from braid.data.corpus import iter_corpus
    from braid.encoders.dense import DenseEncoder
    from braid.encoders.sparse import SparseEncoder
    from braid.retrieval.eval.evaluate import evaluate

    torch.set_num_threads(args.threads)
    ds = BeirDataset(Path(args.data))
    texts = [d.title + " " + d.text for d in itertools.islice(iter_corpus(ds.corpus_path), args.docs + 32)]
    warm, docs = texts[:32], texts[32:]
    test = ds.queries(split="test")
    qids, qtexts = list(test), list(test.values())
    queries = qtexts[: args.queries]
    qrels = ds.qrels("test")
    ids = json.loads((Path(args.vectors) / "ids.json").read_text())["doc_ids"]
    results: dict = {
        "machine": f"{cpu_model()}, {os.cpu_count()} cores visible, {args.threads} thread(s) per path",
        "versions": {m: __import__(m).__version__ for m in ("torch", "transformers", "onnxruntime", "tokenizers")},
        "docs": len(docs), "queries": len(queries), "eval_queries": len(qids), "batch_size": args.batch_size,
        "max_length": args.max_length, "load_average_at_start": [round(x, 1) for x in os.getloadavg()], "models": {},
    }

    def quality(search, qvecs_of_path, ref_top) -> dict:
        top = search(qvecs_of_path)
        run = {q: {ids[d]: float(s) for d, s in zip(top[0][i], top[1][i])} for i, q in enumerate(qids)}
        mean, _ = evaluate(run, qrels, ["ndcg@10"])
        same = None if ref_top is None else float(np.mean([(a == b).all() for a, b in zip(top[0], ref_top)]))
        return {"ndcg@10": round(mean["ndcg@10"], 4), "same_top10_as_torch": same}, top[0]

    common = dict(max_length=args.max_length, batch_size=args.batch_size, device="cpu", threads=args.threads)
    paths = [("braid torch fp32", {"runtime": "torch"}), ("braid onnx fp32", {"runtime": "onnx"}),
             ("braid onnx int8", {"runtime": "onnx", "precision": "int8"})]

    if args.only in (None, "dense"):
        import faiss

        doc_vecs = np.ascontiguousarray(np.load(Path(args.vectors) / "minilm-docs.npy"), dtype=np.float32)
        flat = faiss.IndexFlatIP(doc_vecs.shape[1])
        flat.add(doc_vecs)

        def dense_search(qv):
            scores, docnos = flat.search(np.ascontiguousarray(qv, dtype=np.float32), 10)
            return docnos, scores

        dense_paths = []
        for name, kw in paths:
            enc = DenseEncoder(args.dense, **common, **kw)
            dense_paths.append((name, lambda q, e=enc: e.encode([q], "query")[0], lambda t, e=enc: e.encode(t, "document"),
                                lambda t, e=enc: e.encode(t, "query")))
        if not args.no_fastembed:
            from fastembed import TextEmbedding

            folder = export_for_fastembed(Path(args.dense), Path(tempfile.mkdtemp(prefix="fastembed-minilm-")), args.max_length)
            fe = TextEmbedding("sentence-transformers/all-MiniLM-L6-v2", specific_model_path=str(folder), threads=args.threads)
            embed = lambda t: np.vstack(list(fe.embed(list(t), batch_size=args.batch_size)))  # noqa: E731
            dense_paths.append(("fastembed 0.9.1 (onnx fp32)", lambda q: embed([q])[0], embed, embed))
        rows, ref, ref_top = [], None, None
        for name, one, many, batch_queries in dense_paths:
            got = measure(name, one, many, queries, docs, warm)
            if ref is None:
                ref = got
            row = got["row"]
            dc, qc = cosines(got["docs"], ref["docs"]), cosines(got["queries"], ref["queries"])
            row.update(doc_cos_min=round(float(dc.min()), 6), doc_cos_mean=round(float(dc.mean()), 6),
                       query_cos_min=round(float(qc.min()), 6), query_cos_mean=round(float(qc.mean()), 6))
            q, top = quality(dense_search, batch_queries(qtexts), ref_top)
            ref_top = top if ref_top is None else ref_top
            row.update(q)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        results["models"]["all-MiniLM-L6-v2"] = rows

    if args.only in (None, "sparse"):
        docs_csr = sp.load_npz(Path(args.vectors) / "splade-tiny-docs.npz").tocsr().astype(np.float32)

        def to_csr(v):
            return sp.csr_matrix((v.data, v.indices, v.indptr), shape=(len(v.indptr) - 1, v.vocab_size))

        def sparse_search(qv):
            scores = (qv @ docs_csr.T).toarray()
            docnos = np.argsort(-scores, axis=1, kind="stable")[:, :10]
            return docnos, np.take_along_axis(scores, docnos, axis=1)

        rows, ref, ref_top = [], None, None
        for name, kw in paths:
            enc = SparseEncoder(args.splade, **common, **kw)
            got = measure(name, lambda q, e=enc: to_csr(e.encode([q], "query")),
                          lambda t, e=enc: to_csr(e.encode(t, "document")), queries, docs, warm)
            qd, dd = (x.toarray() if sp.issparse(x) else x for x in (got["queries"], got["docs"]))
            if ref is None:
                ref = {"queries": qd, "docs": dd}
            row = got["row"]
            dc, qc = cosines(dd, ref["docs"]), cosines(qd, ref["queries"])
            row.update(doc_cos_min=round(float(dc.min()), 6), doc_cos_mean=round(float(dc.mean()), 6),
                       query_cos_min=round(float(qc.min()), 6), query_cos_mean=round(float(qc.mean()), 6))
            q, top = quality(sparse_search, to_csr(enc.encode(qtexts, "query")), ref_top)
            ref_top = top if ref_top is None else ref_top
            row.update(q)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        results["models"]["splade-tiny"] = rows
        results["mean_query_tokens"] = round(statistics.mean(len(e.ids) for e in enc.backbone.tokenize(queries)), 1)
        results["mean_doc_tokens"] = round(statistics.mean(len(e.ids) for e in enc.backbone.tokenize(docs)), 1)

    results["load_average_at_end"] = [round(x, 1) for x in os.getloadavg()]
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
