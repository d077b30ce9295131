"""Multi-teacher KD accuracy and speed: does the distilled DNN beat the plain one, reach the best
teacher, and does gating beat averaging?

    nice -n 10 .venv/bin/python benchmarks/kd_bench.py --workdir /tmp/kdb            # everything
    .venv/bin/python benchmarks/kd_bench.py --quick --workdir /tmp/kdb_quick         # smoke test, minutes
    nice -n 10 .venv/bin/python benchmarks/kd_bench.py --datasets frappe --seeds 3

Datasets: Frappe (the two libFM files pooled, split 80/10/10 seed 2026), the Criteo and Avazu 10k
samples, synthetic (`write_synthetic`, 50k rows by default). Seeds 2026-2028 (model init and batch order; the
split is fixed). Per dataset one `mtkd.pipeline.Experiment` in WORKDIR/<dataset>/ (shared with
rl_bench.py: identical runs are reused, so rerunning prints the tables from finished runs).

Settings (chosen so the whole script runs in ~40 minutes on 2 free cores):
  every model: embedding 16, Adam lr 2e-3, batch 2048 (512 on the 10k-row Criteo/Avazu samples and on
  synthetic data under 40k rows),
  at most 6 epochs, early stopping patience 2 (valid AUC unless said), LR x0.1 after 1 bad epoch,
  best-epoch weights restored.
  teachers: DeepFM, DCN, xDeepFM, AutoInt+ with MLP 256-128 (other hyper-parameters: model defaults).
  student: DNN with MLP 128-64; KD: alpha 0.5, temperature 1, soft-label BCE on the teacher mixture.
Rows: every teacher; dnn (no KD); kd_single_<t> with t = the teacher with the best mean VALID AUC
(never test); kd_average, kd_learned, kd_confidence, kd_gate; kd_gate_valid (the gate fitted on
validation rows, `fit_on: valid`, instead of training rows); kd_gate_kdstop (stop on valid.kd_loss);
kd_gate_kdstop_avg / kd_gate_holdout_avg (the same, stopping on valid.kd_loss_avg: the KD loss
against the plain teacher average, a target that does not move while the gate learns);
kd_gate_holdout (valid_holdout 0.5: half of valid joins training, stop on kd_loss over the other,
unlabelled, half); cotrained (co-training with the gate, teachers trained live).

Claims (test AUC mean ± std over seeds; WITHIN NOISE = |difference| < pooled std; with one seed
the std is n/a and no claim gets a verdict):
  1. the KD student beats the DNN without KD; 2. the ensemble-distilled student reaches or beats the
  best single teacher; 3. gating beats averaging. Early stopping: both KD-loss variants against
  stopping on valid AUC. Speed: one offline epoch of the gate student with 4 cached teachers vs one
  plain DNN epoch, timed back to back in each of --speed-repeats rounds; the target (<= 1.2x) is
  judged on the MEDIAN of the per-round ratios (each round's two epochs share the machine's load,
  so a slow phase longer than one run cancels out, where the ratio of the two minima can pair a
  fast moment of one with a slow one of the other); the ratio of minima is printed beside it, as is
  that of the median `train.samples_per_s` of the benchmark runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

DATASETS = "frappe,criteo,avazu,synthetic"
ENSEMBLES = ["kd_average", "kd_learned", "kd_confidence", "kd_gate", "kd_gate_valid"]


def teachers() -> list[dict]:
    return [{"name": t, "model": t} for t in C.TEACHERS]


def students(best: str) -> list[dict]:
    T = C.TEACHERS
    return [
        {"name": "dnn"},
        {"name": f"kd_single_{best}", "distill": {"teachers": [best], "weighting": "single"}},
        {"name": "kd_average", "distill": {"teachers": T, "weighting": "average"}},
        {"name": "kd_learned", "distill": {"teachers": T, "weighting": "learned"}},
        {"name": "kd_confidence", "distill": {"teachers": T, "weighting": "confidence"}},
        {"name": "kd_gate", "distill": {"teachers": T, "weighting": "gate"}},
        {"name": "kd_gate_valid", "distill": {"teachers": T, "weighting": "gate",
                                              "weighting_params": {"fit_on": "valid"}}},
        {"name": "kd_gate_kdstop", "distill": {"teachers": T, "weighting": "gate"},
         "set": {"monitor": "valid.kd_loss"}},
        {"name": "kd_gate_holdout", "distill": {"teachers": T, "weighting": "gate", "valid_holdout": 0.5},
         "set": {"monitor": "valid.kd_loss"}},
        {"name": "kd_gate_kdstop_avg", "distill": {"teachers": T, "weighting": "gate"},
         "set": {"monitor": "valid.kd_loss_avg"}},
        {"name": "kd_gate_holdout_avg", "distill": {"teachers": T, "weighting": "gate", "valid_holdout": 0.5},
         "set": {"monitor": "valid.kd_loss_avg"}},
        {"name": "cotrained", "distill": {"teachers": T, "mode": "cotrain", "weighting": "gate"}},
    ]


def bench(ds: str, args: argparse.Namespace) -> str:
    out = Path(args.workdir) / ds
    log = out / "kd_bench.log"
    C.run(C.experiment(ds, args, teachers(), [], "kd_bench teachers"), log)
    exp = C.make_experiment(C.experiment(ds, args, teachers(), [], "kd_bench teachers"), log)
    task = exp.prepare().feature_map.task
    best, vals = C.best_teacher_by_valid(out, C.TEACHERS, args.seeds, task)
    studs = students(best)
    rows = C.run(C.experiment(ds, args, teachers(), studs, "kd_bench"), log)
    by = C.Rows(rows)
    single = by[f"kd_single_{best}"]
    lines = [C.table(rows, f"{ds}: teachers and students ({len(args.seeds)} seeds)", task,
                     {f"kd_single_{best}": f"kd_single_{best} (best valid teacher)"}), ""]
    lines.append("Teachers' mean valid AUC: " + ", ".join(f"{n} {v:.4f}" for n, v in vals.items())
                 + f" -> best single teacher: {best}")
    lines += ["", f"Claims ({ds}):",
              C.claim("1. KD (best single teacher) beats DNN without KD", single, by["dnn"])]
    for s in ENSEMBLES + ["kd_gate_kdstop", "kd_gate_holdout", "kd_gate_kdstop_avg", "kd_gate_holdout_avg",
                          "cotrained"]:
        lines.append(C.claim(f"1. KD ({s}) beats DNN without KD", by[s], by["dnn"]))
    for s in ENSEMBLES:
        lines.append(C.claim(f"2. {s} reaches or beats the best single teacher ({best}, by valid)", by[s], by[best]))
    lines.append(C.claim("3. gating beats averaging", by["kd_gate"], by["kd_average"]))
    lines.append(C.claim("3. gating (fitted on valid rows) beats averaging", by["kd_gate_valid"], by["kd_average"]))
    lines.append(C.claim("   gate fitted on valid rows vs on training rows", by["kd_gate_valid"], by["kd_gate"]))
    lines.append(gate_weights(out, args.seeds, ["kd_gate", "kd_gate_valid"]))
    lines += ["", f"Early stopping by KD loss ({ds}; best epoch = mean over seeds):"]
    for s in ["kd_gate_kdstop", "kd_gate_holdout", "kd_gate_kdstop_avg", "kd_gate_holdout_avg"]:
        epochs = (f"; best epoch {by[s]['best_epoch']:.1f} vs {by['kd_gate']['best_epoch']:.1f}"
                  if by[s] and by["kd_gate"] else "")
        lines.append(C.claim(f"{s} vs stopping on valid AUC", by[s], by["kd_gate"]) + epochs)
    lines += ["", speed(exp, out, studs, args)]
    return "\n".join(lines)


def gate_weights(out: Path, seeds: list[int], names: list[str]) -> str:
    """Mean gate weight per teacher in the last epoch (train rows), averaged over seeds."""
    parts = []
    for n in names:
        w: dict[str, list[float]] = {}
        for seed in seeds:
            lines = C.metrics(out, "students", n, seed)
            for k, v in (lines[-1] if lines else {}).items():
                if k.startswith("train.w."):
                    w.setdefault(k[8:], []).append(v)
        if w:
            parts.append(f"{n}: " + ", ".join(f"{t} {sum(v) / len(v):.3f}" for t, v in w.items()))
    return "Gate weights in the last epoch (mean over seeds): " + ("; ".join(parts) or "not finished")


def speed(exp, out: Path, studs: list[dict], args: argparse.Namespace) -> str:
    specs = {s["name"]: s for s in studs if s["name"] in ("dnn", "kd_gate")}
    sps = {n: C.median_sps(out, n, args.seeds) for n in specs}
    if C.REPORT_ONLY:
        return (f"Speed (report only, from the benchmark runs' metrics.jsonl, median train.samples_per_s): "
                f"DNN {sps['dnn']:,.0f}/s, gate {sps['kd_gate']:,.0f}/s, ratio {sps['dnn'] / sps['kd_gate']:.2f}x.")
    secs = C.time_epochs(exp, specs, args.seeds[0], out / "speed", args.speed_repeats)
    ratio = secs["kd_gate"] / secs["dnn"]
    median = C.round_ratio("kd_gate", "dnn")
    ratio2 = sps["dnn"] / sps["kd_gate"]
    ok = "PASS" if median <= 1.2 else "FAIL"
    return (f"Speed ({C.load()}): one training epoch, {args.speed_repeats} rounds of back-to-back runs: "
            f"plain DNN {secs['dnn']:.3f} s, gate student with 4 cached teachers {secs['kd_gate']:.3f} s (minima), "
            f"ratio of minima {ratio:.2f}x, median of per-round ratios {median:.2f}x (target <= 1.2x: {ok}). "
            f"From the benchmark runs' metrics.jsonl (median train.samples_per_s, runs of other times and "
            f"loads): DNN {sps['dnn']:,.0f}/s, gate {sps['kd_gate']:,.0f}/s, ratio {ratio2:.2f}x.")


if __name__ == "__main__":
    C.main("kd_bench", __doc__, DATASETS, "criteo,synthetic", bench)
