"""Evaluation against hand-computed values."""

from __future__ import annotations

import math

import pytest

from braid.data.errors import OptionError
from braid.retrieval.eval.evaluate import evaluate


def test_ndcg_hand_computed():
    qrels = {"q": {"a": 2, "b": 1, "c": 0}}
    run = {"q": {"x": 3.0, "a": 2.0, "b": 1.0}}
    # DCG = 0/log2(2) + (2^... trec_eval uses gain = rel: 2/log2(3) + 1/log2(4); ideal = 2/log2(2) + 1/log2(3)
    dcg = 2 / math.log2(3) + 1 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    mean, per_query = evaluate(run, qrels, ["ndcg@10", "recall@100", "mrr@10", "map"])
    assert mean["ndcg@10"] == pytest.approx(dcg / idcg, abs=1e-6)
    assert mean["recall@100"] == pytest.approx(1.0)
    assert mean["mrr@10"] == pytest.approx(0.5)
    assert mean["map"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_self_hits_dropped_and_missing_queries_zero():
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    run = {"q1": {"q1": 9.0, "d1": 1.0}, "q3": {"d1": 1.0}}
    mean, per_query = evaluate(run, qrels, ["mrr@10"])
    assert per_query["q1"]["mrr@10"] == 1.0  # self hit removed, d1 moves to rank 1
    assert per_query["q2"]["mrr@10"] == 0.0  # judged but not retrieved: counts as 0
    assert "q3" not in per_query  # not judged: not scored
    assert mean["mrr@10"] == 0.5
    kept, _ = evaluate(run, qrels, ["mrr@10"], ignore_identical_ids=False)
    assert kept["mrr@10"] == 0.25


def test_mrr_cut_at_10():
    qrels = {"q": {"rel": 1}}
    run = {"q": {f"d{i}": 100.0 - i for i in range(10)} | {"rel": 1.0}}
    mean, _ = evaluate(run, qrels, ["mrr@10", "mrr"])
    assert mean["mrr@10"] == 0.0 and mean["mrr"] == pytest.approx(1 / 11)


def test_unknown_metric():
    with pytest.raises(OptionError, match="--metrics"):
        evaluate({}, {"q": {"d": 1}}, ["ndcg@7x"])
