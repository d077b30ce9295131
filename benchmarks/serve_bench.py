"""HTTP serving under load: `mtkd serve` on loopback, closed-loop clients, requests/s and latency.

    .venv/bin/python benchmarks/serve_bench.py                        # ~4 min
    .venv/bin/python benchmarks/serve_bench.py --seconds 4 --workdir /tmp/sb --keep

Writes Criteo-shaped synthetic data (13 numeric, 26 categorical columns), trains the DNN student
and an AutoInt+ teacher (embedding 16, MLP 400-400-400, one epoch; accuracy is not the point),
exports both to ONNX, and serves each of: the DNN's ONNX export, the DNN's run directory
(PyTorch eager) and AutoInt+'s ONNX export, every one from its own `mtkd serve` process. C
keep-alive clients (threads of this process) each send POST /predict with R raw rows (the CSV's
own values as JSON, unseen ids included) as fast as answers come back, for --seconds after a
warm-up. Before timing, the service's answer to each request is compared with in-process
scoring of the same rows (the same encoder and model, no HTTP).

Printed per (model, engine, R, C): requests/s, rows/s, median and p99 latency, and the
in-process median (JSON parse, encode, score: what is left once HTTP is gone). Clients and
server share this machine's cores, so the figures are a floor for a server with its own.

The in-process median is the least reliable column: it is the median of IN_PROCESS_REPEATS (50)
back-to-back calls in this process, taken once per R before that R's load cells (so the same value
repeats down the C rows), with the `mtkd serve` process up but not under load on the same cores;
nothing isolates it from other work on the machine (one busy neighbour on 2 cores can double it).
Read it as a rough share of the served p50, not as a baseline to subtract.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mtkd.config import load_train_config  # noqa: E402
from mtkd.data.prepare import prepare  # noqa: E402
from mtkd.data.schema import load_schema  # noqa: E402
from mtkd.data.synthetic import write_synthetic  # noqa: E402
from mtkd.serve.export import export_run  # noqa: E402
from mtkd.serve.scorer import Scorer  # noqa: E402
from mtkd.train.run import train_run  # noqa: E402

SCHEMA = REPO / "configs" / "datasets" / "synthetic.yaml"


def build(root: Path, rows: int) -> dict[str, Path]:
    """Data, the two runs and their ONNX exports under `root` (reused when already there)."""
    schema = load_schema(SCHEMA)
    csv_path = root / "raw.csv"
    if not csv_path.exists():
        write_synthetic(csv_path, rows, seed=3)
    prepare(schema, root / "data", csv_path, log=lambda _m: None)
    out: dict[str, Path] = {"csv": csv_path}
    for model in ("dnn", "autoint_plus"):
        run = root / "runs" / model
        if not (run / "summary.json").exists():
            cfg = load_train_config(None, ["epochs=1", "batch_size=2048", "params.embedding_dim=16",
                                           "params.hidden_units=[400,400,400]"], model=model)
            train_run(cfg, root / "data", run, force=True, progress=False, log=lambda _m: None)
        export = root / "exports" / model
        if not (export / "export.json").exists():
            export_run(run, export)
        out[f"{model}_run"], out[f"{model}_onnx"] = run, export
    return out


def raw_rows(csv_path: Path, n: int) -> list[dict]:
    """The last `n` rows of the CSV as a client would send them: numbers as JSON numbers,
    empty cells left out (a missing column is a missing value)."""
    schema = load_schema(SCHEMA)
    numeric = {name for name, _ in schema.numeric()}
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))[-n:]
    out = []
    for r in rows:
        r.pop(schema.label)
        out.append({k: (float(v) if k in numeric else v) for k, v in r.items() if v != ""})
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """`mtkd serve MODEL` in its own process, up once /health answers."""

    def __init__(self, model: Path, workers: int = 1):
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "mtkd", "serve", str(model), "--port", str(self.port),
                                      "--workers", str(workers)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/health")
                self.health = json.loads(conn.getresponse().read())
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise SystemExit(f"mtkd serve {model} exited: {self.proc.stderr.read().decode()}")
                time.sleep(0.2)
        raise SystemExit(f"mtkd serve {model} did not answer /health in 120 s")

    def post(self, conn: http.client.HTTPConnection, body: bytes) -> bytes:
        conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise SystemExit(f"HTTP {resp.status}: {data[:300]!r}")
        return data

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def load(service: Service, body: bytes, clients: int, seconds: float, warmup: float) -> list[float]:
    """Latencies (ms) of every request answered in the timed window, `clients` closed loops."""
    start = time.perf_counter()
    t_begin, t_end = start + warmup, start + warmup + seconds
    per_client: list[list[float]] = [[] for _ in range(clients)]

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=60)
        while True:
            t0 = time.perf_counter()
            if t0 >= t_end:
                break
            service.post(conn, body)
            t1 = time.perf_counter()
            if t0 >= t_begin:
                per_client[i].append((t1 - t0) * 1e3)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [x for xs in per_client for x in xs]


IN_PROCESS_REPEATS = 50


def in_process_ms(scorer: Scorer, body: bytes, repeats: int = IN_PROCESS_REPEATS) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        scorer.score_batch(scorer.rows_to_batch(json.loads(body)["rows"]))
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=50_000, help="synthetic rows to train on")
    ap.add_argument("--requests", default="1,256", help="rows per request, comma-separated")
    ap.add_argument("--clients", default="1,4", help="concurrent clients, comma-separated")
    ap.add_argument("--seconds", type=float, default=8.0, help="timed seconds per cell")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--workers", default="1", help="`mtkd serve --workers`, comma-separated to compare")
    ap.add_argument("--workdir", default=None, help="keep data, runs and exports here (reused)")
    ap.add_argument("--keep", action="store_true", help="keep a temporary workdir")
    args = ap.parse_args()
    root = Path(args.workdir or tempfile.mkdtemp(prefix="serve_bench_"))
    root.mkdir(parents=True, exist_ok=True)
    paths = build(root, args.rows)
    sizes = [int(x) for x in args.requests.split(",")]
    clients = [int(x) for x in args.clients.split(",")]
    pool = raw_rows(paths["csv"], max(sizes))
    served = [("dnn (student)", paths["dnn_onnx"]), ("dnn (student)", paths["dnn_run"]),
              ("autoint_plus (teacher)", paths["autoint_plus_onnx"])]
    print(f"serve_bench: {args.seconds:g} s per cell after {args.warmup:g} s warm-up; clients and server on "
          "this machine")
    print(f"in-process p50: median of {IN_PROCESS_REPEATS} back-to-back calls in this process, once per rows/request "
          "(repeated down the clients rows), the service up but idle on the same cores; unisolated, a rough "
          "guide under CPU contention")
    print("| model | engine | workers | rows / request | clients | requests/s | rows/s | p50 ms | p99 ms | "
          f"in-process p50 ms (n={IN_PROCESS_REPEATS}) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (label, model), workers in [(m, int(w)) for m in served for w in args.workers.split(",")]:
        service = Service(model, workers)
        scorer = Scorer.open(model)
        try:
            for r in sizes:
                body = json.dumps({"rows": pool[:r]}).encode()
                conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=60)
                got = np.asarray(json.loads(service.post(conn, body))["probabilities"])
                want = scorer.score_batch(scorer.rows_to_batch(pool[:r]))
                gap = float(np.abs(got - want).max())
                if gap > 1e-6:
                    raise SystemExit(f"{model}: the service's answer differs from in-process scoring by {gap:.2e}")
                local = in_process_ms(scorer, body)
                for c in clients:
                    lat = load(service, body, c, args.seconds, args.warmup)
                    rps = len(lat) / args.seconds
                    p50, p99 = np.percentile(lat, [50, 99])
                    print(f"| {label} | {service.health['engine']} | {workers} | {r} | {c} | {rps:,.0f} | {rps * r:,.0f} | "
                          f"{p50:.2f} | {p99:.2f} | {local:.2f} |", flush=True)
        finally:
            service.stop()
    if not (args.workdir or args.keep):
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
