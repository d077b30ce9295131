"""Shared helpers of `kd_bench.py` and `rl_bench.py`: datasets, settings, experiments, claims.

Both scripts build `mtkd.pipeline.Experiment`s into WORKDIR/<dataset>/ and share the teacher runs
and the identical students there (same name and config = same run, reused). Run them one after
the other, or on different datasets at the same time, never both on one dataset at once.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO / "src"))

TEACHERS = ["deepfm", "dcn", "xdeepfm", "autoint_plus"]  # the four strong teachers
SEEDS = [2026, 2027, 2028]

# One setting for every dataset; small data gets smaller batches so an epoch has >= 16 steps.
BATCH = {"frappe": 2048, "synthetic": 2048, "synthetic_mc": 2048, "criteo": 512, "avazu": 512}


def data_source(ds: str, synthetic_rows: int) -> dict[str, Any]:
    cfg = REPO / "configs" / "datasets"
    d = SHARED / "data"
    if ds == "frappe":
        return {"schema": str(cfg / "frappe.yaml"),
                "train": [str(d / "frappe" / "frappe.validation.libfm"), str(d / "frappe" / "frappe.test.libfm")]}
    if ds == "criteo":
        return {"schema": str(cfg / "criteo.yaml"), "train": [str(d / "criteo" / "criteo_dac_train_first10k.txt")]}
    if ds == "avazu":
        return {"schema": str(cfg / "avazu.yaml"), "train": [str(d / "avazu" / "avazu_train_first10k.csv")]}
    if ds == "synthetic":
        return {"schema": str(cfg / "synthetic.yaml"), "synth": {"rows": synthetic_rows, "seed": 0}}
    if ds == "synthetic_mc":
        return {"schema": str(cfg / "synthetic_multiclass.yaml"),
                "synth": {"rows": synthetic_rows, "seed": 0, "task": "multiclass", "classes": 4}}
    raise SystemExit(f"unknown dataset {ds!r}; known: frappe, criteo, avazu, synthetic, synthetic_mc")


def add_common_args(p: argparse.ArgumentParser, datasets: str) -> None:
    p.add_argument("--datasets", default=None, help=f"comma-separated (default {datasets})")
    p.add_argument("--seeds", type=int, default=None, help="number of run seeds, from 2026 (default 3)")
    p.add_argument("--synthetic-rows", type=int, default=None, help="rows of synthetic data (default 50000)")
    p.add_argument("--epochs", type=int, default=None, help="maximum epochs per run (default 6)")
    p.add_argument("--patience", type=int, default=2)
    p.add_argument("--workdir", default="/tmp/mtkd_kdbench", help="experiments land here; finished runs are reused")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 when sharing the CPUs)")
    p.add_argument("--speed-repeats", type=int, default=3, help="timed epochs per model for the speed ratio")
    p.add_argument("--quick", action="store_true", help="smoke test: 3k synthetic rows, 1 seed, 2 epochs")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: tables from the runs finished in WORKDIR (unfinished rows left out)")


def resolve_args(args: argparse.Namespace, default_datasets: str, quick_datasets: str) -> argparse.Namespace:
    q = args.quick
    args.datasets = (args.datasets or (quick_datasets if q else default_datasets)).split(",")
    args.seeds = SEEDS[:1] if (args.seeds is None and q) else [2026 + i for i in range(args.seeds or 3)]
    args.synthetic_rows = args.synthetic_rows or (3000 if q else 50_000)
    args.epochs = args.epochs or (2 if q else 6)
    if q:
        args.speed_repeats = 1
    import torch

    torch.set_num_threads(max(1, args.threads))
    global REPORT_ONLY
    REPORT_ONLY = args.report_only
    return args


REPORT_ONLY = False


def defaults(ds: str, args: argparse.Namespace) -> dict[str, Any]:
    """Training settings of every teacher and student (models drop the params they lack)."""
    batch = BATCH.get(ds, 2048)
    if ds.startswith("synthetic") and args.synthetic_rows < 40_000:
        batch = 512  # keep >= 16 steps per epoch on small synthetic data
    return {"batch_size": batch, "epochs": args.epochs, "patience": args.patience,
            "lr_patience": 1, "optimizer": {"lr": 0.002},
            "params": {"embedding_dim": 16, "hidden_units": [256, 128]}}


STUDENT = {"model": "dnn", "params": {"hidden_units": [128, 64]}}


def experiment(ds: str, args: argparse.Namespace, teachers: list[dict[str, Any]], students: list[dict[str, Any]],
               name: str) -> dict[str, Any]:
    return {"name": f"{name} {ds}", "out": str(Path(args.workdir) / ds), "data": data_source(ds, args.synthetic_rows),
            "seeds": args.seeds, "defaults": defaults(ds, args), "student": STUDENT,
            "teachers": teachers, "students": students}


def make_experiment(cfg: dict[str, Any], log_file: Path):
    from mtkd.config import ExperimentConfig
    from mtkd.config_io import parse_model
    from mtkd.pipeline import Experiment

    log_file.parent.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        with open(log_file, "a") as f:
            f.write(f"{time.strftime('%H:%M:%S')} {msg}\n")

    return Experiment(parse_model(ExperimentConfig, cfg, cfg["name"]), cfg["name"], log)


def collect(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Report rows of the models whose runs have finished for every seed (no training, no latency)."""
    from mtkd.data.store import Dataset
    from mtkd.pipeline import _method
    from mtkd.report import summarise

    exp = make_experiment(cfg, Path(cfg["out"]) / "report_only.log")
    task = Dataset(exp.data_dir).feature_map.task
    out, rows = Path(cfg["out"]), []
    for kind, specs in (("teachers", exp.cfg.teachers), ("students", exp.cfg.students)):
        for m in specs:
            paths = [out / kind / m.name / f"seed{s}" / "summary.json" for s in exp.cfg.seeds]
            if not all(p.exists() for p in paths):
                print(f"  [{cfg['name']}: {m.name} not finished for every seed: left out]")
                continue
            runs = [json.loads(p.read_text()) for p in paths]
            make = exp.teacher_config if kind == "teachers" else exp.student_config
            rows.append(summarise(m.name, kind[:-1], _method(make(m, exp.cfg.seeds[0])), runs, None, task))
    return rows


def run(cfg: dict[str, Any], log_file: Path) -> list[dict[str, Any]]:
    """Run (or reuse) an experiment; returns the report rows."""
    if REPORT_ONLY:
        return collect(cfg)
    t = time.perf_counter()
    rows = make_experiment(cfg, log_file).run()
    print(f"  [{cfg['name']}: {len(rows)} rows in {time.perf_counter() - t:.0f} s; log {log_file}]", flush=True)
    return rows


def summaries(out: Path, kind: str, name: str, seeds: list[int]) -> list[dict[str, Any]]:
    return [json.loads((out / kind / name / f"seed{s}" / "summary.json").read_text()) for s in seeds]


def metrics(out: Path, kind: str, name: str, seed: int) -> list[dict[str, Any]]:
    p = out / kind / name / f"seed{seed}" / "metrics.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.exists() else []


def metric_key(task: str) -> str:
    return "auc" if task == "binary" else "accuracy"


def best_teacher_by_valid(out: Path, names: list[str], seeds: list[int], task: str) -> tuple[str, dict[str, float]]:
    """The teacher with the best mean VALID metric over seeds (never test)."""
    key = metric_key(task)
    vals = {n: statistics.fmean(s["valid"][key] for s in summaries(out, "teachers", n, seeds)) for n in names}
    return max(vals, key=vals.get), vals


def one_seed(r: dict[str, Any]) -> bool:
    """A row from fewer than 2 seeds: its std is not an estimate of anything (the report says 0)."""
    return int(r.get("seeds") or 0) < 2


def table(rows: list[dict[str, Any]], title: str, task: str, labels: dict[str, str] | None = None) -> str:
    from mtkd.report import to_markdown

    # A one-seed row's std prints as n/a, not 0.0000 (NaN through the report, then renamed).
    shown = [dict(r, model=(labels or {}).get(r["model"], r["model"]),
                  **({k: math.nan for k in r if k.startswith("test_") and k.endswith("_std")} if one_seed(r) else {}))
             for r in rows]
    return (to_markdown(shown, title, [], task).replace(f"# {title}\n\n\n", f"### {title}\n\n")
            .replace("± nan", "± n/a"))


def fmt(r: dict[str, Any]) -> str:
    return f"{r['test_auc']:.4f} ± " + ("n/a" if one_seed(r) else f"{r['test_auc_std']:.4f}")


def verdict(a: dict[str, Any], b: dict[str, Any]) -> str:
    """a should beat b (higher is better): HOLDS / DOES NOT HOLD / WITHIN NOISE (|diff| < pooled std);
    n/a when either side has fewer than 2 seeds (no std, so no noise band to judge against)."""
    if one_seed(a) or one_seed(b):
        n = min(int(a.get("seeds") or 0), int(b.get("seeds") or 0))
        return f"n/a ({n} seed{'' if n == 1 else 's'})"
    diff = a["test_auc"] - b["test_auc"]
    pooled = math.sqrt((a["test_auc_std"] ** 2 + b["test_auc_std"] ** 2) / 2)
    if abs(diff) < pooled or (pooled == 0 and diff == 0):
        return "WITHIN NOISE"
    return "HOLDS" if diff > 0 else "DOES NOT HOLD"


def claim(text: str, a: dict[str, Any] | None, b: dict[str, Any] | None, metric: str = "AUC") -> str:
    if a is None or b is None:
        return f"- {text}: not finished"
    diff = a["test_auc"] - b["test_auc"]
    pooled = ("n/a" if one_seed(a) or one_seed(b)
              else f"{math.sqrt((a['test_auc_std'] ** 2 + b['test_auc_std'] ** 2) / 2):.4f}")
    return (f"- {text}: {a['model']} {fmt(a)} vs {b['model']} {fmt(b)} (test {metric}; diff {diff:+.4f}, "
            f"pooled std {pooled}) -> {verdict(a, b)}")


def time_epochs(exp: Any, specs: dict[str, Any], seed: int, root: Path, repeats: int,
                tweak: Callable[[str, Any], Any] | None = None) -> dict[str, float]:
    """Seconds of one training epoch of each student spec (the min over `repeats` runs, round-robin so
    load changes hit every model alike). Teacher outputs are already cached beside the dataset."""
    from mtkd.train.run import train_run

    best: dict[str, float] = {}
    for name in specs:  # round_ratio pairs this call's rounds only (not an earlier dataset's)
        ROUNDS[name] = []
    for r in range(repeats):
        for name, spec in specs.items():
            from mtkd.config import ModelSpec

            cfg = exp.student_config(ModelSpec.model_validate(spec), seed).model_copy(update={"epochs": 1})
            if tweak is not None:
                cfg = tweak(name, cfg)
            s = train_run(cfg, exp.data_dir, root / f"{name}_r{r}", force=True, log=lambda m: None, progress=False)
            best[name] = min(best.get(name, math.inf), float(s["train_seconds"]))
            ROUNDS.setdefault(name, []).append(float(s["train_seconds"]))
    return best


ROUNDS: dict[str, list[float]] = {}  # every timed epoch of the last time_epochs call, per spec, in round order


def round_ratio(a: str, b: str) -> float:
    """Median over rounds of epoch(a) / epoch(b), the two timed back to back in the same round: steadier
    than the ratio of minima when the machine has slow phases longer than one run."""
    xs, ys = ROUNDS.get(a, []), ROUNDS.get(b, [])
    return statistics.median(x / y for x, y in zip(xs, ys)) if xs and ys else float("nan")


def median_sps(out: Path, name: str, seeds: list[int], skip_first: int = 0) -> float:
    xs = [m["train.samples_per_s"] for s in seeds for m in metrics(out, "students", name, s)[skip_first:]
          if "train.samples_per_s" in m]
    return statistics.median(xs) if xs else float("nan")


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


class Rows(dict):
    """Report rows by model name; a model that has not finished is None."""

    def __init__(self, rows: list[dict[str, Any]]):
        super().__init__({r["model"]: r for r in rows})

    def __missing__(self, key: str) -> None:
        return None


def main(name: str, doc: str, datasets: str, quick_datasets: str,
         bench: Callable[[str, argparse.Namespace], str]) -> None:
    """The shared command line of kd_bench and rl_bench: one report section per dataset."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    add_common_args(p, datasets)
    args = resolve_args(p.parse_args(), datasets, quick_datasets)
    t0 = time.perf_counter()
    print(f"{name}: datasets {args.datasets}, seeds {args.seeds}, epochs <= {args.epochs}, "
          f"synthetic rows {args.synthetic_rows:,}, workdir {args.workdir}; {load()}", flush=True)
    parts = []
    for ds in args.datasets:
        try:
            text = bench(ds, args)
        except FileNotFoundError as e:
            if not args.report_only:
                raise
            text = f"### {ds}: not enough finished runs to report ({e})"
        print("\n" + text + "\n", flush=True)
        parts.append(text)
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    (Path(args.workdir) / f"{name}_{'_'.join(args.datasets)}.md").write_text("\n\n".join(parts) + "\n")
    print(f"{name} done in {time.perf_counter() - t0:.0f} s")
