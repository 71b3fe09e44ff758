"""Compare the untrained sparse-if rows of $W/results.jsonl with training.md's untrained figures.

    python scripts/training/check_untrained.py RESULTS.jsonl NAME...    # prints the names that match (4 digits)
"""

import json
import sys

EXPECTED = {  # sparse-if nDCG@10, Recall@100 on the test split, untrained (docs/benchmarks/training.md)
    "scifact": (0.6533, 0.8953), "adi": (0.4505, 0.9573), "medline": (0.6962, 0.8468),
    "cisi": (0.3113, 0.3960), "cranfield": (0.3469, 0.7163), "cacm": (0.3618, 0.5912),
}

rows = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8")]
ok = []
for name in sys.argv[2:]:
    got = [r for r in rows if r["index"] == "untrained" and r["retriever"] == "sparse-if" and r["dataset"].rstrip("/").endswith("/" + name)]
    if not got:
        print(f"{name}: no untrained row", file=sys.stderr)
        continue
    g = (got[-1]["ndcg@10"], got[-1]["recall@100"])
    match = g == EXPECTED[name]
    print(f"{name}: measured {g}, expected {EXPECTED[name]}: {'match' if match else 'MISMATCH'}", file=sys.stderr)
    if match:
        ok.append(name)
print(" ".join(ok))
