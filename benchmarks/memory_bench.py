"""Peak memory of every pipeline stage at two sizes: which stages stream and which hold a split.

    .venv/bin/python benchmarks/memory_bench.py                    # 1M and 2M rows (about 4 minutes)
    .venv/bin/python benchmarks/memory_bench.py --rows 300000,600000 --workdir /tmp/mb

For each size it writes Criteo-shaped synthetic rows, then runs each stage as its own `mtkd`
command in a fresh process and samples its memory every 20 ms from /proc: the peak of its own
heap (RssAnon, what it holds) and of its whole RSS (also the memory-mapped pages of the dataset
it read, which grow with the rows but are the kernel's to drop): prepare; train a DNN and a DeepFM teacher (1 epoch, batch 4096);
score both teachers; distil a DNN student (average weighting, 1 epoch); evaluate the student on
its training split (the largest evaluation); predict the raw file with the student.

A stage streams when its heap's peak does not grow with the rows: target, the larger size's peak
within 25% of the smaller's (the interpreter, torch and the models are a fixed few hundred MB).
An evaluation holds one output and label a row (AUC ranks them all) and the metrics' sort: target,
at most 300 bytes of heap per evaluated row between the two sizes. Before `Trainer.predict` filled
arrays sized once, evaluating 800k rows peaked at 2.4 GB of RSS (2.2 KB a row).
Prints one table and a PASS/FAIL line per stage; exits 1 when one fails.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "configs" / "datasets" / "synthetic.yaml"
GROWTH = 0.25
EVAL_BYTES_PER_ROW = 300
TRAIN_SHARE = 0.8  # the synthetic schema's train split



def mtkd(*args: object) -> list[str]:
    return [sys.executable, "-m", "mtkd.cli", *map(str, args)]


def stages(w: Path) -> list[tuple[str, list[str]]]:
    fit = ["--set", "epochs=1", "--set", "batch_size=4096", "--quiet"]
    return [
        ("prepare", mtkd("data", "prepare", "--schema", SCHEMA, "--train", w / "s.csv", "--out", w / "d")),
        ("train dnn", mtkd("train", "--data", w / "d", "--model", "dnn", "--out", w / "dnn", *fit)),
        ("train deepfm", mtkd("train", "--data", w / "d", "--model", "deepfm", "--out", w / "deepfm", *fit)),
        ("score 2 teachers", mtkd("score", "--data", w / "d", "-t", w / "dnn", "-t", w / "deepfm")),
        ("distill average", mtkd("distill", "--data", w / "d", "-t", w / "dnn", "-t", w / "deepfm",
                                 "--weighting", "average", "--out", w / "kd", *fit)),
        ("evaluate train split", mtkd("evaluate", w / "kd", "--split", "train")),
        ("predict raw file", mtkd("predict", w / "kd", "--input", w / "s.csv", "--out", w / "p.csv")),
    ]


def _status_kib(pid: int) -> dict[str, int]:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in lines) if k in ("RssAnon", "VmRSS")}


def measure(cmd: list[str]) -> tuple[float, float, float]:
    """(peak heap MiB, peak RSS MiB, wall seconds) of one command in its own process."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:  # a file, not a pipe: a chatty stage never blocks on it
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True, cwd=REPO)
        anon = rss = 0
        while p.poll() is None:
            s = _status_kib(p.pid)
            anon, rss = max(anon, s.get("RssAnon", 0)), max(rss, s.get("VmRSS", 0))
            time.sleep(0.02)
        if p.returncode != 0:
            log.seek(0)
            raise SystemExit(f"failed: {' '.join(cmd)}\n{log.read()[-2000:]}")
    return anon / 1024, rss / 1024, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="1000000,2000000", help="two sizes, comma-separated")
    ap.add_argument("--workdir", default=None, help="kept when given (default: a temporary directory)")
    args = ap.parse_args()
    sizes = [int(r) for r in args.rows.split(",")]
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="memory_bench-"))
    sys.path.insert(0, str(REPO / "src"))
    from mtkd.data.synthetic import write_synthetic

    peaks: dict[str, list[tuple[float, float, float]]] = {}
    try:
        for rows in sizes:
            w = root / f"rows{rows}"
            shutil.rmtree(w, ignore_errors=True)
            w.mkdir(parents=True)
            write_synthetic(w / "s.csv", rows, seed=0)
            for name, cmd in stages(w):
                peaks.setdefault(name, []).append(measure(cmd))
                anon, rss, s = peaks[name][-1]
                print(f"  {rows:,} rows, {name}: heap {anon:,.0f} MiB, RSS {rss:,.0f} MiB, {s:.1f} s", flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\n| stage | {' | '.join(f'{r:,} rows: heap / RSS MiB, s' for r in sizes)} | heap growth |")
    print("|---|" + "---:|" * (len(sizes) + 1))
    verdicts = []
    for name, got in peaks.items():
        growth = got[-1][0] / got[0][0] - 1
        if name.startswith("evaluate"):
            per_row = (got[-1][0] - got[0][0]) * 2**20 / ((sizes[-1] - sizes[0]) * TRAIN_SHARE)
            verdicts.append((per_row <= EVAL_BYTES_PER_ROW, f"{name}: {per_row:,.0f} bytes of heap per evaluated "
                             f"row (at most {EVAL_BYTES_PER_ROW})"))
        else:
            verdicts.append((growth <= GROWTH, f"{name}: heap peak {growth:+.0%} from {sizes[0]:,} to "
                             f"{sizes[-1]:,} rows (at most +{GROWTH:.0%})"))
        print(f"| {name} | {' | '.join(f'{a:,.0f} / {r:,.0f}, {s:.1f}' for a, r, s in got)} | {growth:+.0%} |")
    print()
    for ok, line in verdicts:
        print(f"{'PASS' if ok else 'FAIL'} {line}")
    return 0 if all(ok for ok, _ in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
