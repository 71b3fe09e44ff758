"""Load test of ``braid serve`` from a second process on loopback, bounded in time and requests.

    nice -n 10 .venv/bin/python scripts/bench_serve.py --index /tmp/serve-bench/scifact \
        --dataset /work/shared/data/scifact --target bm25 --target hybrid \
        --concurrency 1,8,64 --duration 10 --json /tmp/serve-bench/serve.json

(add ``--build-retrievers bm25,sparse,dense`` with ``--sparse-vectors``/``--dense-vectors`` and the
models to build a hybrid index from pre-encoded vectors; see docs/benchmarks/serve.md)

What it does:

1. builds ``--index`` from ``--dataset`` with ``--build-retrievers`` (library call) if it does not exist;
2. starts ``python -m braid.cli.serve INDEX`` on 127.0.0.1 (a free port) with the given service
   limits, and waits for ``GET /health``;
3. for each target (a retriever or pipeline name) and each concurrency: one short warm-up, then
   ``POST /search`` ({"query", "k", "retriever"}) cycling through the dataset's test queries
   (queries.jsonl restricted to qrels/test.tsv ids) from N concurrent clients, for ``--duration``
   seconds or ``--max-requests`` requests, whichever comes first; then ``GET /health`` must answer
   (a server that crashed fails the run);
4. prints one markdown row per run: target, clients, requests/s (answered 200), p50/p99 latency
   (ms), counts of 200, 503, 504, other statuses and socket errors, whether the server still
   answered, the server's CPU time per answered request (ms; steadier than requests/s on a
   shared machine) and the machine's 1-minute load average before-after; ``--json`` keeps them all.

The load generator is ``wrk`` (C, one connection per client, a Lua script cycling the bodies and
counting statuses) when it is installed and ``--client wrk``/``auto``; otherwise an asyncio httpx
client (``--client httpx``), which spends more CPU per request on this side. Load generator and
server share the same machine: on a 2-core box they compete for the cores.

Slow clients (``--slow-clients 0,1000``): for each number N, N connections that never finish a
request (``--slow-mode``: ``headers`` trickles header lines, ``body`` sends whole headers and then
trickles the body, ``mixed`` alternates, ``fat`` sends 900 kB of a 1 MB body at once and then
trickles), one line or byte every ``--slow-interval`` seconds, each reconnecting as soon as the
server closes it (``--slow-interval`` later when it answered 503); meanwhile ``--normal-clients`` httpx clients send
ordinary ``POST /search`` requests. Both stop after ``--duration`` seconds (normal requests also
after ``--max-requests``; reconnections after 200 per slow client). One markdown row per N:
normal requests/s, p50/p99/max latency of their 200s, their other statuses and socket errors, the
server's RSS (before, peak, after; sampled every 0.5 s from /proc) and open descriptors (peak), and
what the slow connections got (408 answers, closes without an answer, refused connects). Every
connection goes to 127.0.0.1. ``--server-pythonpath`` serves another checkout (a before/after).

``--big-batch``: one ``/batch_search`` of 256 test queries x k=1000 with fields; prints its status,
size and time, and how long the server kept working on it (``in_flight`` polled until 0).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
from machine import cpu_model  # scripts/machine.py (the scripts run as files)

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------- data and index
def read_qrels(dataset: Path, split: str = "test") -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with open(dataset / "qrels" / f"{split}.tsv", encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            if line.strip():
                qid, doc_id, score = line.rstrip("\n").split("\t")
                qrels.setdefault(qid, {})[doc_id] = int(score)
    return qrels


def judged_queries(dataset: Path, split: str = "test") -> dict[str, str]:
    """``{query_id: text}`` of the queries judged in ``qrels/<split>.tsv``, in queries.jsonl order."""
    judged = read_qrels(dataset, split)
    out = {}
    with open(dataset / "queries.jsonl", encoding="utf-8") as fh:
        for line in fh:
            q = json.loads(line)
            if q["_id"] in judged:
                out[q["_id"]] = q["text"]
    return out


def test_queries(dataset: Path, split: str = "test") -> list[str]:
    """Texts of the queries judged in ``qrels/<split>.tsv``, in queries.jsonl order."""
    return list(judged_queries(dataset, split).values())


# Published nDCG@10 on scifact (../shared/ANCHORS.md) for the retrievers that have one.
ANCHORS = {"bm25": ("BM25 flat, Pyserini", 0.6789), "dense": ("all-MiniLM-L6-v2, MTEB", 0.6451)}


def served_quality(url: str, dataset: Path, targets: list[str], k: int = 100, batch: int = 50) -> list[dict]:
    """nDCG@10 and Recall@100 of each target over the API (BraidClient.batch_search, BEIR conventions)."""
    from braid.retrieval.serve.client import BraidClient
    from braid.retrieval.eval.evaluate import evaluate

    qrels = read_qrels(dataset)
    queries = judged_queries(dataset)
    ids = list(queries)
    rows = []
    with BraidClient(url, timeout=600) as client:
        for target in targets:
            run: dict[str, dict[str, float]] = {}
            t0 = time.perf_counter()
            for i in range(0, len(ids), batch):
                chunk = {q: queries[q] for q in ids[i : i + batch]}
                for qid, hits in client.batch_search(chunk, k=k, retriever=target).items():
                    run[qid] = {h["id"]: h["score"] for h in hits}
            mean, _ = evaluate(run, qrels, ["ndcg@10", "recall@100"])
            anchor = ANCHORS.get(target)
            rows.append({
                "target": target,
                "ndcg@10": round(mean["ndcg@10"], 4),
                "recall@100": round(mean["recall@100"], 4),
                "anchor": anchor[0] if anchor else None,
                "ratio_to_anchor": round(mean["ndcg@10"] / anchor[1], 3) if anchor else None,
                "seconds": round(time.perf_counter() - t0, 1),
            })
            r = rows[-1]
            click.echo(f"| {target} | {r['ndcg@10']} | {r['recall@100']} | {r['anchor'] or '-'} | {r['ratio_to_anchor'] or '-'} |")
    return rows


def ensure_index(index: Path, dataset: Path, retrievers: str, sparse_vectors: Path | None, sparse_model: str | None, dense_vectors: Path | None, dense_model: str | None) -> None:
    """Build ``index`` from ``dataset`` unless it exists.

    ``dense_vectors``: a float32 (num_docs, dim) ``.npy`` of document embeddings in corpus order
    (e.g. /work/shared/vectors/scifact/minilm-docs.npy), put into a flat FAISS component with
    ``dense_model`` recorded as the query encoder, instead of encoding the corpus here (which takes
    tens of minutes on a shared 2-core machine). ``sparse_vectors`` goes through the library's own
    ``--sparse-vectors`` path.
    """
    if (index / "manifest.json").exists():
        return
    from braid.retrieval.build.builder import BuildOptions, build_index

    names = tuple(r.strip() for r in retrievers.split(",") if r.strip() and not (r.strip() == "dense" and dense_vectors))
    click.echo(f"building {index} from {dataset} ({', '.join(names)})", err=True)
    options = BuildOptions(retrievers=names, progress=False, sparse_vectors=sparse_vectors, sparse_model=sparse_model, dense_model=dense_model)
    build_index(dataset, index, options, log=lambda m: click.echo(m, err=True))
    if dense_vectors is not None:
        add_dense_from_vectors(index, dense_vectors, dense_model)


def add_dense_from_vectors(index: Path, path: Path, model: str | None) -> None:
    import numpy as np

    from braid.encoders.dense import DenseEncoder
    from braid.encoders.resolve import DEFAULT_DENSE_MODEL
    from braid.index.dense import DenseIndex, DenseIndexConfig
    from braid.index.manifest import adding_component, read_manifest

    vectors = np.load(path, allow_pickle=False)
    encoder = DenseEncoder(model or DEFAULT_DENSE_MODEL, max_length=256)
    if vectors.ndim != 2 or vectors.shape[1] != encoder.dim or vectors.shape[0] != read_manifest(index)["num_docs"]:
        raise click.ClickException(f"{path}: shape {vectors.shape} does not fit {index} and {encoder.name} (dim {encoder.dim})")
    entry = {"encoder": {**encoder.describe("document"), "model": encoder.name, "vectors": str(path)}}
    with adding_component(index, "dense", entry) as tmp:
        entry["index"] = DenseIndex.build(np.ascontiguousarray(vectors, dtype=np.float32), DenseIndexConfig()).save(tmp)


# ---------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``braid serve`` in a subprocess on 127.0.0.1."""

    def __init__(self, index: Path, args: list[str], log_path: Path, pythonpath: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        cmd = [sys.executable, "-m", "braid.cli.serve", str(index), "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning", *args]
        self.cmd = cmd
        env = dict(os.environ)
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        deadline = time.monotonic() + 300
        while not self.healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise click.ClickException(f"server did not start; log: {log_path}\n" + log_path.read_text()[-3000:])
            time.sleep(0.2)

    def healthy(self) -> bool:
        import httpx

        try:
            return httpx.get(self.url + "/health", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (Linux /proc), NaN elsewhere."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> float:
        """Resident memory of the server process (Linux /proc), NaN elsewhere."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")

    def open_fds(self) -> int:
        """Open file descriptors of the server process (sockets included), -1 when unknown."""
        try:
            return len(os.listdir(f"/proc/{self.proc.pid}/fd"))
        except OSError:
            return -1

    def drain(self, limit: float = 120.0) -> None:
        """Wait until no search of an earlier run is in flight, so runs do not overlap."""
        deadline = time.monotonic() + limit
        while self.get("/health")["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.2)

    def get(self, path: str) -> dict:
        import httpx

        return httpx.get(self.url + path, timeout=10).json()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


# ---------------------------------------------------------------------- load generators
def bodies(queries: list[str], k: int, target: str) -> list[str]:
    return [json.dumps({"query": q, "k": k, "retriever": target}, ensure_ascii=False) for q in queries]


WRK_LUA = r"""
local bodies = {BODIES}
local i = 0
c200, c503, c504, cother = 0, 0, 0, 0
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) i = math.random(#bodies) end
function request()
  i = i %% #bodies + 1
  return wrk.format("POST", "/search", {["Content-Type"] = "application/json"}, bodies[i])
end
function response(status, headers, body)
  if status == 200 then c200 = c200 + 1
  elseif status == 503 then c503 = c503 + 1
  elseif status == 504 then c504 = c504 + 1
  else cother = cother + 1 end
end
function done(summary, latency, requests)
  local t = {c200 = 0, c503 = 0, c504 = 0, cother = 0}
  for _, th in ipairs(threads) do
    for k, _ in pairs(t) do t[k] = t[k] + th:get(k) end
  end
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, "max_us": %%d, ' ..
    '"s200": %%d, "s503": %%d, "s504": %%d, "sother": %%d, "connect": %%d, "read": %%d, "write": %%d, "timeout": %%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    t.c200, t.c503, t.c504, t.cother, e.connect, e.read, e.write, e.timeout))
end
"""


def run_wrk(url: str, body_list: list[str], concurrency: int, duration: float, timeout_s: float) -> dict:
    """One wrk run. wrk's latency percentiles cover every answered request (200s and 503s alike)."""
    lua_bodies = ",\n".join("[==[" + b + "]==]" for b in body_list)
    script = WRK_LUA.replace("%%", "%").replace("{BODIES}", "{" + lua_bodies + "}")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script)
        path = fh.name
    try:
        threads = min(2, concurrency)
        cmd = ["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{max(1, round(duration))}s", "--timeout", f"{max(1, round(timeout_s))}s", "-s", path, url + "/search"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + timeout_s + 60)
    finally:
        os.unlink(path)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise click.ClickException("wrk failed:\n" + out.stdout + out.stderr)
    r = json.loads(line[len("WRKJSON ") :])
    secs = r["duration_us"] / 1e6
    return {
        "client": "wrk",
        "wall_s": round(secs, 2),
        "requests": r["requests"],
        "ok": r["s200"],
        "rps": round(r["s200"] / secs, 1),
        "p50_ms": round(r["p50_us"] / 1000, 2),
        "p99_ms": round(r["p99_us"] / 1000, 2),
        "max_ms": round(r["max_us"] / 1000, 2),
        "latency_of": "all answered requests",
        "s503": r["s503"],
        "s504": r["s504"],
        "other_status": r["sother"],
        "socket_errors": r["connect"] + r["read"] + r["write"] + r["timeout"],
    }


async def _httpx_load(url: str, body_list: list[str], concurrency: int, duration: float, max_requests: int, timeout_s: float) -> dict:
    import httpx

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    sent = 0
    stop_at = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"content-type": "application/json"}
    encoded = [b.encode("utf-8") for b in body_list]
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout_s) as client:

        async def worker(w: int) -> None:
            nonlocal sent, errors
            i = w * 7919
            while time.perf_counter() < stop_at and sent < max_requests:
                sent += 1
                i += 1
                t0 = time.perf_counter()
                try:
                    r = await client.post("/search", content=encoded[i % len(encoded)], headers=headers)
                except httpx.TransportError:
                    errors += 1
                    continue
                dt = time.perf_counter() - t0
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                if r.status_code == 200:
                    latencies.append(dt)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        wall = time.perf_counter() - t0
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000, 2) if latencies else float("nan")

    return {
        "client": "httpx",
        "wall_s": round(wall, 2),
        "requests": sum(statuses.values()),
        "ok": statuses.get(200, 0),
        "rps": round(statuses.get(200, 0) / wall, 1),
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "max_ms": round(latencies[-1] * 1000, 2) if latencies else float("nan"),
        "latency_of": "200 answers",
        "s503": statuses.get(503, 0),
        "s504": statuses.get(504, 0),
        "other_status": sum(v for s, v in statuses.items() if s not in (200, 503, 504)),
        "socket_errors": errors,
    }


def run_load(client: str, url: str, body_list: list[str], concurrency: int, duration: float, max_requests: int, timeout_s: float) -> dict:
    if client == "wrk":
        return run_wrk(url, body_list, concurrency, duration, timeout_s)
    return asyncio.run(_httpx_load(url, body_list, concurrency, duration, max_requests, timeout_s))


# ---------------------------------------------------------------------- slow clients
SLOW_HEADERS = b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
SLOW_BODY_HEAD = SLOW_HEADERS + b"Content-Length: 100000\r\n\r\n"
FAT_BODY_START = SLOW_HEADERS + b"Content-Length: 1000000\r\n\r\n" + b" " * 900_000


async def _slow_client(n: int, port: int, mode: str, interval: float, stop_at: float, counts: dict, max_connects: int) -> None:
    """One slow client: connect, send the start of a request, then one header line (``headers``)
    or one body byte (``body``, ``fat``: after 900 kB of body at once) per ``interval``; when the
    server answers or closes, reconnect (after ``interval`` when it answered 503). Ends at
    ``stop_at`` or after ``max_connects`` connections."""
    import random

    kind = mode if mode != "mixed" else ("headers" if n % 2 == 0 else "body")
    await asyncio.sleep(random.uniform(0, min(2.0, interval)))  # spread the first connects
    for _ in range(max_connects):
        if time.perf_counter() >= stop_at:
            return
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        except (OSError, asyncio.TimeoutError):
            counts["connect_errors"] += 1
            await asyncio.sleep(0.2)
            continue
        counts["connects"] += 1
        counts["open"] += 1
        status = None
        try:
            writer.write({"headers": SLOW_HEADERS, "body": SLOW_BODY_HEAD, "fat": FAT_BODY_START}[kind])
            while time.perf_counter() < stop_at:
                try:
                    data = await asyncio.wait_for(reader.read(4096), interval)
                except asyncio.TimeoutError:
                    writer.write(b"X-Slow: 1\r\n" if kind == "headers" else b" ")
                    await writer.drain()
                    continue
                if data.startswith(b"HTTP/1.1 "):
                    status = data[9:12].decode("ascii", "replace")
                    counts[f"answered_{status}"] = counts.get(f"answered_{status}", 0) + 1
                else:
                    counts["closed_silently"] += 1
                break
        except OSError:
            counts["closed_silently"] += 1
        finally:
            counts["open"] -= 1
            writer.close()
        await asyncio.sleep(interval if status == "503" else 0.05)


async def _mixed_load(server: "Server", body_list: list[str], slow: int, mode: str, interval: float, normal: int, duration: float, max_requests: int, timeout_s: float) -> dict:
    import httpx

    stop_at = time.perf_counter() + duration
    counts = {"connects": 0, "open": 0, "connect_errors": 0, "closed_silently": 0}
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    sent = 0
    samples: list[tuple[float, float, int, int]] = []  # (t, rss MiB, open fds, slow connections open)
    encoded = [b.encode("utf-8") for b in body_list]
    headers = {"content-type": "application/json"}

    async def sampler() -> None:
        t0 = time.perf_counter()
        while time.perf_counter() < stop_at:
            samples.append((round(time.perf_counter() - t0, 1), server.rss_mib(), server.open_fds(), counts["open"]))
            await asyncio.sleep(0.5)

    limits = httpx.Limits(max_connections=normal, max_keepalive_connections=normal)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=timeout_s) as client:

        async def worker(w: int) -> None:
            nonlocal sent, errors
            i = w * 7919
            await asyncio.sleep(min(3.0, duration / 4))  # start once the slow clients are in place
            while time.perf_counter() < stop_at and sent < max_requests:
                sent += 1
                i += 1
                t0 = time.perf_counter()
                try:
                    r = await client.post("/search", content=encoded[i % len(encoded)], headers=headers)
                except httpx.TransportError:
                    errors += 1
                    await asyncio.sleep(0.05)
                    continue
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - t0)

        rss_before = server.rss_mib()
        t0 = time.perf_counter()
        await asyncio.gather(sampler(), *(worker(w) for w in range(normal)), *(_slow_client(n, server.port, mode, interval, stop_at, counts, 200) for n in range(slow)))
        wall = time.perf_counter() - t0
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000, 2) if latencies else float("nan")

    await asyncio.sleep(1.0)
    normal_wall = max(1e-9, wall - min(3.0, duration / 4))
    return {
        "slow_clients": slow,
        "slow_mode": mode,
        "slow_interval_s": interval,
        "normal_clients": normal,
        "wall_s": round(wall, 2),
        "normal_ok": statuses.get(200, 0),
        "normal_rps": round(statuses.get(200, 0) / normal_wall, 1),
        "normal_p50_ms": pct(50),
        "normal_p99_ms": pct(99),
        "normal_max_ms": round(latencies[-1] * 1000, 2) if latencies else float("nan"),
        "normal_other_status": {s: c for s, c in statuses.items() if s != 200},
        "normal_socket_errors": errors,
        "rss_mib_before": round(rss_before, 1),
        "rss_mib_peak": round(max((r for _, r, _, _ in samples), default=float("nan")), 1),
        "rss_mib_after": round(server.rss_mib(), 1),
        "fds_peak": max((f for _, _, f, _ in samples), default=-1),
        "slow_open_peak": max((o for _, _, _, o in samples), default=0),
        "slow": dict(counts),
        "samples": samples,
    }


def run_slow(server: "Server", body_list: list[str], slow: int, mode: str, interval: float, normal: int, duration: float, max_requests: int, timeout_s: float) -> dict:
    return asyncio.run(_mixed_load(server, body_list, slow, mode, interval, normal, duration, max_requests, timeout_s))


def slow_row(r: dict) -> str:
    other = ", ".join(f"{s}: {c}" for s, c in sorted(r["normal_other_status"].items())) or "0"
    slow = r["slow"]
    answered = ", ".join(f"{k[len('answered_'):]}: {v}" for k, v in sorted(slow.items()) if k.startswith("answered_")) or "0"
    return (
        f"| {r['slow_clients']} | {r['slow_mode']} | {r['normal_clients']} | {r['normal_rps']} | {r['normal_p50_ms']} | {r['normal_p99_ms']} | "
        f"{r['normal_max_ms']} | {r['normal_ok']} | {other} | {r['normal_socket_errors']} | {r['rss_mib_before']} / {r['rss_mib_peak']} / {r['rss_mib_after']} | "
        f"{r['fds_peak']} | {slow['connects']} | {answered} | {slow['closed_silently']} | {slow['connect_errors']} | {'yes' if r['alive_after'] else 'NO'} |"
    )


# ---------------------------------------------------------------------- one huge batch
def probe_big_batch(server: "Server", queries: list[str], target: str, n: int = 256, k: int = 1000, timeout_s: float = 120.0) -> dict:
    """One ``/batch_search`` of ``n`` queries x ``k`` hits with fields: what comes back (status,
    bytes, seconds) and how long the server keeps working after answering (``in_flight`` polled
    every 0.1 s until 0, at most ``timeout_s``)."""
    import httpx

    body = {"queries": queries[:n], "k": k, "fields": True, "retriever": target}
    cpu0 = server.cpu_seconds()
    t0 = time.perf_counter()
    try:
        r = httpx.post(server.url + "/batch_search", json=body, timeout=timeout_s)
        status, size = r.status_code, len(r.content)
        detail = r.json().get("detail") if status != 200 else None
    except httpx.TransportError as exc:
        status, size, detail = None, 0, type(exc).__name__
    answered = time.perf_counter() - t0
    rss = server.rss_mib()
    busy_until = answered
    while time.perf_counter() - t0 < timeout_s and server.get("/health")["in_flight"]:
        time.sleep(0.1)
        busy_until = time.perf_counter() - t0
    return {
        "queries": n, "k": k, "status": status, "bytes": size, "detail": detail, "answered_s": round(answered, 2),
        "work_done_s": round(busy_until, 2), "server_cpu_s": round(server.cpu_seconds() - cpu0, 2), "rss_mib_after": round(rss, 1),
    }


# ---------------------------------------------------------------------- main
@click.command()
@click.option("--index", type=click.Path(path_type=Path), required=True, help="Index directory (built from --dataset if missing).")
@click.option("--dataset", type=click.Path(path_type=Path), default=Path("/work/shared/data/scifact"), show_default=True)
@click.option("--build-retrievers", default="bm25", show_default=True, help="Components to build when the index is missing.")
@click.option("--sparse-vectors", type=click.Path(path_type=Path, exists=True), default=None, help="Pre-encoded sparse document vectors for the build.")
@click.option("--sparse-model", default=None, help="SPLADE model (query encoder) for the build.")
@click.option("--dense-vectors", type=click.Path(path_type=Path, exists=True), default=None, help="Pre-encoded dense document vectors (.npy, corpus order) for the build.")
@click.option("--dense-model", default=None, help="Bi-encoder (query encoder) for the build.")
@click.option("--target", "targets", multiple=True, default=["bm25"], show_default=True, help="Retriever or pipeline to load (repeatable).")
@click.option("--concurrency", default="1,8,64", show_default=True, help="Concurrent clients, comma-separated.")
@click.option("--duration", default=10.0, show_default=True, help="Seconds per run.")
@click.option("--max-requests", default=200_000, show_default=True, help="Request cap per run (httpx client).")
@click.option("-k", "k", default=10, show_default=True)
@click.option("--client", type=click.Choice(["auto", "wrk", "httpx"]), default="auto", show_default=True)
@click.option("--server-args", default="--max-concurrency 2 --queue-size 32 --timeout 10", show_default=True, help="Extra `braid serve` options.")
@click.option("--request-timeout", default=30.0, show_default=True, help="Client-side timeout per request (s).")
@click.option("--quality", "quality_targets", default="", help="Comma-separated retrievers/pipelines whose nDCG@10 to measure through the API first (sanity check of the served index).")
@click.option("--slow-clients", default="", help="Comma-separated numbers of slow clients to run beside normal traffic (e.g. 0,1000); see the module docstring.")
@click.option("--slow-mode", type=click.Choice(["headers", "body", "mixed", "fat"]), default="mixed", show_default=True)
@click.option("--slow-interval", default=1.0, show_default=True, help="Seconds between two bytes (or header lines) of a slow client.")
@click.option("--normal-clients", default=8, show_default=True, help="Ordinary clients beside the slow ones.")
@click.option("--server-pythonpath", default=None, help="PYTHONPATH for the server process (to serve another checkout).")
@click.option("--big-batch", is_flag=True, help="Also send one /batch_search of 256 queries x k=1000 with fields, and report what comes back and how long the server works on it.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None)
@click.option("--log", "log_path", type=click.Path(path_type=Path), default=Path(tempfile.gettempdir()) / "bench_serve.server.log", show_default=True)
def main(index, dataset, build_retrievers, sparse_vectors, sparse_model, dense_vectors, dense_model, targets, concurrency, duration, max_requests, k, client, server_args, request_timeout, quality_targets, slow_clients, slow_mode, slow_interval, normal_clients, server_pythonpath, big_batch, json_out, log_path):
    """Load-test `braid serve` on INDEX from this (second) process."""
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "httpx"
    ensure_index(index, dataset, build_retrievers, sparse_vectors, sparse_model, dense_vectors, dense_model)
    queries = test_queries(dataset)
    levels = [int(c) for c in concurrency.split(",") if c.strip()]
    slow_levels = [int(c) for c in slow_clients.split(",") if c.strip()]
    server = Server(index, server_args.split(), log_path, pythonpath=server_pythonpath)
    rows = []
    slow_rows = []
    big = []
    quality = []
    try:
        info = server.get("/info")
        if quality_targets:
            quality = served_quality(server.url, dataset, [t.strip() for t in quality_targets.split(",") if t.strip()])
        served = set(info["retrievers"]) | set(info["pipelines"])
        for target in targets:
            if target not in served:
                raise click.ClickException(f"{target!r} is not served (served: {', '.join(sorted(served))}; unavailable: {info['unavailable']})")
            body_list = bodies(queries, k, target)
            run_load(client, server.url, body_list[:20], 1, 2.0, 50, request_timeout)  # warm-up
            for c in levels:
                server.drain()
                load_before = os.getloadavg()[0]
                cpu_before = server.cpu_seconds()
                r = run_load(client, server.url, body_list, c, duration, max_requests, request_timeout)
                cpu = server.cpu_seconds() - cpu_before
                answered = r["ok"] + r["s503"] + r["s504"] + r["other_status"]
                r.update(
                    target=target,
                    concurrency=c,
                    alive_after=server.healthy(),
                    loadavg_1min=[round(load_before, 1), round(os.getloadavg()[0], 1)],
                    server_cpu_s=round(cpu, 2),
                    server_cpu_ms_per_answer=round(1000 * cpu / answered, 3) if answered else None,
                )
                rows.append(r)
                click.echo(
                    f"| {target} | {c} | {r['rps']} | {r['p50_ms']} | {r['p99_ms']} | {r['ok']} | {r['s503']} | {r['s504']} | "
                    f"{r['other_status']} | {r['socket_errors']} | {'yes' if r['alive_after'] else 'NO'} | {r['server_cpu_ms_per_answer']} | "
                    f"{r['loadavg_1min'][0]}-{r['loadavg_1min'][1]} |"
                )
                if not r["alive_after"]:
                    raise click.ClickException(f"the server stopped answering after {target} at {c} clients; log: {log_path}")
            for n in slow_levels:
                server.drain()
                r = run_slow(server, body_list, n, slow_mode, slow_interval, normal_clients, duration, max_requests, request_timeout)
                r.update(target=target, alive_after=server.healthy(), loadavg_1min=round(os.getloadavg()[0], 1))
                slow_rows.append(r)
                click.echo(slow_row(r))
                if not r["alive_after"]:
                    raise click.ClickException(f"the server stopped answering after {n} slow clients; log: {log_path}")
            if big_batch:
                server.drain()
                big.append({"target": target, **probe_big_batch(server, queries, target)})
                click.echo(json.dumps(big[-1]))
        health = server.get("/health")
        pipelines = {name: [s["name"] for s in p["retriever"]] for name, p in info["pipelines"].items()}
    finally:
        code = server.stop()
    meta = {
        "index": str(index),
        "num_docs": info["num_docs"],
        "components": sorted(info["manifest"]["components"]),
        "pipelines": pipelines,
        "server_cmd": " ".join(server.cmd),
        "server_pythonpath": server_pythonpath,
        "server_exit": code,
        "server_health_at_end": health,
        "client": client,
        "duration_s": duration,
        "k": k,
        "queries": len(queries),
        "machine": {"cpu": cpu_model(), "cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }
    click.echo(json.dumps(meta, indent=1), err=True)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({"meta": meta, "quality": quality, "runs": rows, "slow_runs": slow_rows, "big_batch": big}, indent=1))


if __name__ == "__main__":
    main()
