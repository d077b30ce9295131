"""Data-pipeline benchmark: generate -> prepare -> BatchLoader on Criteo-shaped synthetic CSVs.

    .venv/bin/python benchmarks/data_bench.py                      # 1M and 3M rows
    .venv/bin/python benchmarks/data_bench.py --rows 200000 --repeat 3 --keep --workdir /tmp/b

For each size it writes a CSV with `mtkd.data.synthetic.write_synthetic` (timed, not judged),
then runs `mtkd.data.prepare.prepare` with `configs/datasets/synthetic.yaml`, and finally
iterates the prepared train split with `BatchLoader` (batch 4096, one warm-up epoch, then one
timed epoch, shuffled and sequential).

Every step runs in its own fresh child process (this script re-invoked with `_child`), so the
peak RSS reported for prepare is that of the prepare process alone: the child reports its own
`getrusage(RUSAGE_SELF).ru_maxrss` when it finishes. It includes the interpreter and the
imports (shown as "base RSS", measured in the same child just before prepare starts).

Targets (2-core machine): prepare >= 300,000 rows/s; prepare peak RSS < 2 GiB and not growing
with the file (largest size within 20% of the smallest); loader >= 5,000,000 rows/s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "configs" / "datasets" / "synthetic.yaml"

PREPARE_TARGET = 300_000  # rows/s
PEAK_TARGET_MIB = 2048  # MiB
PEAK_GROWTH = 0.20  # largest size's peak within 20% of the smallest size's
LOADER_TARGET = 5_000_000  # rows/s
BATCH = 4096


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ---------------------------------------------------------------------------------- children


def _child_gen(csv: str, rows: int, seed: int) -> dict:
    from mtkd.data.synthetic import write_synthetic

    t0 = time.perf_counter()
    write_synthetic(csv, rows, seed)
    return {"seconds": time.perf_counter() - t0, "bytes": os.path.getsize(csv)}


def _child_prepare(csv: str, out: str) -> dict:
    from mtkd.data.prepare import prepare
    from mtkd.data.schema import load_schema

    schema = load_schema(SCHEMA)
    base = _maxrss_mib()
    t0 = time.perf_counter()
    manifest = prepare(schema, out, csv)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "peak_mib": _maxrss_mib(), "base_mib": base,
            "timing": manifest.get("timing", {}),
            "splits": {k: int(v["rows"]) for k, v in manifest["splits"].items()}}


def _child_load(out: str, shuffle: bool) -> dict:
    from mtkd.data.loader import BatchLoader
    from mtkd.data.store import Dataset

    loader = BatchLoader(Dataset(out), "train", batch_size=BATCH, shuffle=shuffle, seed=0)
    for _ in loader:  # warm-up epoch (page cache, allocator)
        pass
    rows = 0
    t0 = time.perf_counter()
    for batch in loader:
        rows += len(batch)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rows": rows, "peak_mib": _maxrss_mib()}


def _child(argv: list[str]) -> None:
    kind, *args = argv
    if kind == "gen":
        res = _child_gen(args[0], int(args[1]), int(args[2]))
    elif kind == "prepare":
        res = _child_prepare(args[0], args[1])
    elif kind == "load":
        res = _child_load(args[0], args[1] == "1")
    else:
        raise SystemExit(f"unknown child step {kind!r}")
    print("RESULT " + json.dumps(res), flush=True)


def _run(*args: str) -> dict:
    """Run one step in a fresh interpreter; returns the JSON it printed last."""
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "_child", *args],
                          cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"child step {args[0]} failed with exit status {proc.returncode}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    return json.loads(lines[-1][len("RESULT "):])


# ---------------------------------------------------------------------------------- parent


def _fmt_int(x: float) -> str:
    return f"{x:,.0f}"


def bench(rows_list: list[int], workdir: Path, repeat: int, seed: int, keep: bool) -> list[dict]:
    results = []
    for rows in rows_list:
        csv = workdir / f"synth_{rows}.csv"
        out = workdir / f"prepared_{rows}"
        print(f"[{rows:,} rows] generating {csv} ...", flush=True)
        gen = _run("gen", str(csv), str(rows), str(seed))
        print(f"[{rows:,} rows]   generated {gen['bytes'] / 1e6:,.0f} MB in {gen['seconds']:.1f} s", flush=True)
        preps = []
        for i in range(repeat):
            shutil.rmtree(out, ignore_errors=True)
            load_before = os.getloadavg()[0]
            p = _run("prepare", str(csv), str(out))
            p["load1_before"] = load_before
            preps.append(p)
            print(f"[{rows:,} rows]   prepare #{i + 1}: {p['seconds']:.2f} s "
                  f"({rows / p['seconds']:,.0f} rows/s), peak RSS {p['peak_mib']:,.0f} MiB "
                  f"(base {p['base_mib']:,.0f}), manifest timing {p['timing']}", flush=True)
        best = min(preps, key=lambda p: p["seconds"])
        peak = max(p["peak_mib"] for p in preps)  # the worst peak over the repeats
        loads = {}
        for shuffle in (True, False):
            lr = _run("load", str(out), "1" if shuffle else "0")
            loads[shuffle] = lr
            print(f"[{rows:,} rows]   loader shuffle={shuffle}: {lr['rows']:,} train rows in "
                  f"{lr['seconds']:.3f} s ({lr['rows'] / lr['seconds']:,.0f} rows/s)", flush=True)
        results.append({
            "rows": rows, "csv_mb": gen["bytes"] / 1e6, "gen_s": gen["seconds"],
            "prep_s": best["seconds"], "prep_rps": rows / best["seconds"], "peak_mib": peak,
            "base_mib": best["base_mib"], "fit_s": best["timing"].get("fit_seconds"),
            "load_shuf": loads[True]["rows"] / loads[True]["seconds"],
            "load_seq": loads[False]["rows"] / loads[False]["seconds"],
            "train_rows": loads[True]["rows"], "load1": os.getloadavg()[0],
        })
        if not keep:  # keep the disk footprint to one size at a time
            shutil.rmtree(out, ignore_errors=True)
            csv.unlink(missing_ok=True)
            Path(str(csv) + ".meta.json").unlink(missing_ok=True)
    return results


def report(results: list[dict], repeat: int) -> bool:
    hdr = ["rows", "CSV MB", "gen s", "prepare s", "prepare rows/s (>= 300k)", "peak RSS MiB (< 2048, flat)",
           "loader rows/s shuffled (>= 5M)", "loader rows/s sequential (>= 5M)", "load avg"]
    body = [[_fmt_int(r["rows"]), f"{r['csv_mb']:,.0f}", f"{r['gen_s']:.1f}",
             f"{r['prep_s']:.2f}" + (f" (fit {r['fit_s']:.2f})" if r["fit_s"] is not None else ""),
             _fmt_int(r["prep_rps"]), f"{r['peak_mib']:,.0f} (base {r['base_mib']:,.0f})",
             _fmt_int(r["load_shuf"]), _fmt_int(r["load_seq"]), f"{r['load1']:.2f}"] for r in results]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(hdr)]
    line = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    print()
    print(f"Data pipeline benchmark ({os.cpu_count()} CPUs, batch {BATCH}, prepare best of {repeat}, "
          f"loader = train split, 2nd epoch)")
    print()
    print(line(hdr))
    print("|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    for b in body:
        print(line(b))
    print()

    ok_prep = all(r["prep_rps"] >= PREPARE_TARGET for r in results)
    ok_peak = all(r["peak_mib"] < PEAK_TARGET_MIB for r in results)
    lo = min(results, key=lambda r: r["rows"])
    hi = max(results, key=lambda r: r["rows"])
    growth = hi["peak_mib"] / lo["peak_mib"] - 1
    ok_flat = growth <= PEAK_GROWTH
    ok_load = all(min(r["load_shuf"], r["load_seq"]) >= LOADER_TARGET for r in results)
    v = lambda ok: "PASS" if ok else "FAIL"  # noqa: E731
    print(f"prepare >= {PREPARE_TARGET:,} rows/s: {v(ok_prep)} "
          f"(min {min(r['prep_rps'] for r in results):,.0f})")
    print(f"prepare peak RSS < {PEAK_TARGET_MIB} MiB: {v(ok_peak)} (max {max(r['peak_mib'] for r in results):,.0f} MiB)")
    if hi is lo:
        print("prepare peak RSS not growing: n/a (one size only)")
    else:
        print(f"prepare peak RSS not growing ({hi['rows']:,} vs {lo['rows']:,} rows, <= +{PEAK_GROWTH:.0%}): "
              f"{v(ok_flat)} ({growth:+.1%})")
    print(f"loader >= {LOADER_TARGET:,} rows/s (shuffled and sequential): {v(ok_load)} "
          f"(min {min(min(r['load_shuf'], r['load_seq']) for r in results):,.0f})")
    return ok_prep and ok_peak and (ok_flat or hi is lo) and ok_load


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_child"]:
        _child(argv[1:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="1000000,3000000", help="comma-separated row counts (default 1000000,3000000)")
    ap.add_argument("--workdir", default=None, help="where the CSVs and datasets go (default: a temp dir under /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (a temp one is otherwise deleted)")
    ap.add_argument("--repeat", type=int, default=1, help="run prepare N times per size and report the best time")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rows_list = [int(x.replace("_", "")) for x in args.rows.split(",") if x.strip()]
    if not rows_list or args.repeat < 1:
        ap.error("--rows needs at least one size and --repeat must be >= 1")
    tmp = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="mtkd-data-bench-", dir="/tmp")) if tmp else Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"workdir {workdir}; load average {os.getloadavg()}", flush=True)
    try:
        results = bench(rows_list, workdir, args.repeat, args.seed, args.keep)
        ok = report(results, args.repeat)
        print(f"load average at the end: {tuple(round(x, 2) for x in os.getloadavg())}")
    finally:
        if tmp and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif args.keep:
            print(f"kept {workdir}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
