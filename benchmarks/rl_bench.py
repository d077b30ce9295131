"""Reinforced teacher selection against the baseline weightings, a poor teacher in the pool, and
the policy's cost per epoch.

    nice -n 10 .venv/bin/python benchmarks/rl_bench.py --workdir /tmp/kdb            # everything
    .venv/bin/python benchmarks/rl_bench.py --quick --workdir /tmp/rlb_quick         # smoke test, minutes
    nice -n 10 .venv/bin/python benchmarks/rl_bench.py --datasets frappe,synthetic_mc

Datasets: Frappe, the Criteo and Avazu 10k samples, synthetic binary and synthetic 4-class
(`write_synthetic`, 50k rows by default). Seeds 2026-2028. Same settings and WORKDIR layout as
kd_bench.py (see its docstring): the teachers (DeepFM, DCN, xDeepFM, AutoInt+) and the students
both scripts share (dnn, kd_average, kd_confidence, kd_gate) are trained once and reused.

Students (DNN 128-64, alpha 0.5, temperature 1; binary: soft-label BCE, multi-class: KL):
  baselines  kd_average = U-Ensemble, kd_random = Rand-Single, kd_fixed = W-Ensemble (weights from
             the teachers' valid AUC above 0.5 / valid accuracy), kd_lr_ensemble = LR-Ensemble,
             kd_best = Best-Single (per instance, lowest CE), kd_confidence (CA-MKD), kd_gate, and
             kd_gate_valid (the gate fitted on validation rows, `fit_on: valid`).
  policy     policy_ce / policy_ce_kd / policy_valid: Bernoulli selection per (instance, teacher),
             linear heads on the documented state, REINFORCE with the instance baseline and the
             reward on 25% of each batch (the defaults), policy Adam lr 1e-2, 1 warm-up epoch with
             the plain average; `valid` rewards the change of AUC (accuracy) on a 4,096-row
             validation probe over episodes of 5 steps. policy_ce_paper: the paper's form, reward on
             every row, moving-average baseline only, lr 1e-3.
  poor       the four teachers plus deepfm_5pct (DeepFM trained on 5% of the training rows: a
             deliberately weak teacher): poor_average, poor_gate, poor_policy_ce and
             poor_policy_ce_paper; the weak teacher's selection rate (policy) and mean weight (gate)
             per epoch.
Cost: one epoch of each policy vs one epoch of kd_average (policy active from the first step),
timed back to back in each of --speed-repeats rounds; the target (<= 1.3x) is judged on the median
of the per-round ratios (the ratio of minima printed beside it), and the median
train.samples_per_s of the benchmark runs after the warm-up epoch.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

DATASETS = "frappe,criteo,avazu,synthetic,synthetic_mc"
BASELINES = {"kd_average": "U-Ensemble", "kd_random": "Rand-Single", "kd_fixed": "W-Ensemble",
             "kd_lr_ensemble": "LR-Ensemble", "kd_best": "Best-Single", "kd_confidence": "confidence",
             "kd_gate": "gate"}
REWARDS = ["ce", "ce_kd", "valid"]
POOR = "deepfm_5pct"


def policy(reward: str) -> dict:
    p = {"reward": reward, "action": "bernoulli", "warmup_epochs": 1}  # lr 1e-2, instance baseline
    if reward == "valid":
        p["episode_steps"] = 5
    return p


def teachers() -> list[dict]:
    return [{"name": t, "model": t} for t in C.TEACHERS] + [
        {"name": POOR, "model": "deepfm", "set": {"train_fraction": 0.05}}]


def students() -> list[dict]:
    T, P = C.TEACHERS, C.TEACHERS + [POOR]
    out = [{"name": "dnn"}]
    out += [{"name": n, "distill": {"teachers": T, "weighting": n[3:]}} for n in BASELINES]
    out += [{"name": "kd_gate_valid", "distill": {"teachers": T, "weighting": "gate",
                                                  "weighting_params": {"fit_on": "valid"}}}]
    out += [{"name": f"policy_{r}", "distill": {"teachers": T, "weighting": "policy", "weighting_params": policy(r)}}
            for r in REWARDS]
    paper = {**policy("ce"), "baseline": "batch", "reward_sample": 1.0, "lr": 1e-3}
    out += [{"name": "policy_ce_paper", "distill": {"teachers": T, "weighting": "policy", "weighting_params": paper}}]
    out += [{"name": "poor_average", "distill": {"teachers": P, "weighting": "average"}},
            {"name": "poor_gate", "distill": {"teachers": P, "weighting": "gate"}},
            {"name": "poor_policy_ce", "distill": {"teachers": P, "weighting": "policy",
                                                   "weighting_params": policy("ce")}},
            {"name": "poor_policy_ce_paper", "distill": {"teachers": P, "weighting": "policy",
                                                         "weighting_params": paper}}]
    return out


def bench(ds: str, args: argparse.Namespace) -> str:
    out = Path(args.workdir) / ds
    log = out / "rl_bench.log"
    studs = students()
    cfg = C.experiment(ds, args, teachers(), studs, "rl_bench")
    rows = C.run(cfg, log)
    exp = C.make_experiment(cfg, log)
    task = exp.prepare().feature_map.task
    metric = "AUC" if task == "binary" else "accuracy"
    by = C.Rows(rows)
    labels = {n: f"{n} ({lab})" for n, lab in BASELINES.items()}
    labels[POOR] = f"{POOR} (poor teacher)"
    lines = [C.table(rows, f"{ds}: teachers, baselines and the policy ({len(args.seeds)} seeds)", task, labels), ""]
    lines.append(f"Policy vs U-Ensemble ({ds}, test {metric}):")
    base = [n for n in BASELINES if n != "kd_average"] + ["kd_gate_valid"]
    best_base = max((n for n in base if by[n]), key=lambda n: by[n]["test_auc"], default="kd_gate")
    for r in REWARDS:
        lines.append(C.claim(f"policy ({r}) beats U-Ensemble", by[f"policy_{r}"], by["kd_average"], metric))
    lines.append(C.claim("paper-form policy (ce) beats U-Ensemble", by["policy_ce_paper"], by["kd_average"], metric))
    for r in REWARDS:
        lines.append(C.claim(f"policy ({r}) beats the best other baseline ({best_base}, by test: optimistic)",
                             by[f"policy_{r}"], by[best_base], metric))
    lines += ["", f"Poor teacher ({POOR}) in the pool ({ds}, test {metric}):",
              C.claim("the poor teacher hurts averaging", by["kd_average"], by["poor_average"], metric),
              C.claim("policy (ce) beats averaging with the poor teacher in the pool",
                      by["poor_policy_ce"], by["poor_average"], metric),
              C.claim("paper-form policy (ce) beats averaging with the poor teacher in the pool",
                      by["poor_policy_ce_paper"], by["poor_average"], metric),
              C.claim("gate beats averaging with the poor teacher in the pool", by["poor_gate"],
                      by["poor_average"], metric), "", selection(out, args)]
    lines += ["", cost(exp, out, studs, args)]
    return "\n".join(lines)


def _per_epoch(out: Path, name: str, key: str, seeds: list[int]) -> list[float | None]:
    runs = [C.metrics(out, "students", name, s) for s in seeds]
    n = max((len(r) for r in runs), default=0)
    res = []
    for e in range(n):
        xs = [r[e][key] for r in runs if e < len(r) and key in r[e]]
        res.append(statistics.fmean(xs) if xs else None)
    return res


def selection(out: Path, args: argparse.Namespace) -> str:
    """Per epoch (mean over the seeds still running): policy selection rate of each teacher, gate weight."""
    names = C.TEACHERS + [POOR]
    sel = {t: _per_epoch(out, "poor_policy_ce", f"train.sel.{t}", args.seeds) for t in names}
    paper = _per_epoch(out, "poor_policy_ce_paper", f"train.sel.{POOR}", args.seeds)
    gate = {t: _per_epoch(out, "poor_gate", f"train.w.{t}", args.seeds) for t in names}
    n = max(len(sel[POOR]), len(gate[POOR]), len(paper))
    f = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    at = lambda xs, e: xs[e] if e < len(xs) else None  # noqa: E731
    lines = ["Selection over epochs (train split; mean over seeds; epoch 1 of the policy is the warm-up average, "
             "so no selection):", "",
             "| epoch | " + " | ".join(f"policy sel {t}" for t in names) + f" | paper-form policy sel {POOR} | " +
             " | ".join(f"gate w {t}" for t in names) + " |",
             "|---:|" + "---:|" * (2 * len(names) + 1)]
    for e in range(n):
        cells = [f(at(sel[t], e)) for t in names] + [f(at(paper, e))] + [f(at(gate[t], e)) for t in names]
        lines.append(f"| {e + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cost(exp, out: Path, studs: list[dict], args: argparse.Namespace) -> str:
    names = ["kd_average"] + [f"policy_{r}" for r in REWARDS]
    specs = {s["name"]: s for s in studs if s["name"] in names}

    def active_now(name, cfg):  # time the policy itself, not its warm-up epoch
        if name.startswith("policy"):
            cfg = cfg.model_copy(deep=True)
            cfg.distill.weighting_params["warmup_epochs"] = 0
        return cfg

    sps = {n: C.median_sps(out, n, args.seeds, skip_first=1) for n in names}
    if C.REPORT_ONLY:
        return ("Cost (report only; benchmark runs' median train.samples_per_s after the warm-up epoch, "
                "average / policy): " + ", ".join(f"policy_{r} {sps['kd_average'] / sps[f'policy_{r}']:.2f}x"
                                                  for r in REWARDS) + ".")
    secs = C.time_epochs(exp, specs, args.seeds[0], out / "speed_rl", args.speed_repeats, active_now)
    parts = [f"Cost ({C.load()}): one training epoch, {args.speed_repeats} rounds of back-to-back runs: "
             f"kd_average {secs['kd_average']:.3f} s"]
    for r in REWARDS:
        n = f"policy_{r}"
        ratio, median = secs[n] / secs["kd_average"], C.round_ratio(n, "kd_average")
        parts.append(f"{n} {secs[n]:.3f} s = {ratio:.2f}x of minima, median of per-round ratios {median:.2f}x "
                     f"({'PASS' if median <= 1.3 else 'FAIL'} <= 1.3x)")
    return "; ".join(parts) + "."


if __name__ == "__main__":
    C.main("rl_bench", __doc__, DATASETS, "criteo,synthetic_mc", bench)
