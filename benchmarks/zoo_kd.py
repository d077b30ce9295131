"""DNN students distilled from the zoo's own teacher runs (`zoo_bench.py --models kd_gate,...`).

The question the ensemble-distillation paper asks, on the zoo's numbers: does a plain DNN that
learns from the strongest models of the same profile and seed reach them? Teachers are the
KD_TEACHERS interaction models with the highest mean VALID AUC over the seeds (test is not
looked at to choose them); `kd_single` learns from the first of them alone. The student is the
`dnn` of the profile (same embedding, MLP, regulariser and loop) plus `distill` (alpha 0.5,
temperature 1: the defaults). Teacher outputs are scored once per teacher run and cached there.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Callable

KD_TEACHERS = 4
KD_STUDENTS: dict[str, dict[str, Any]] = {
    "kd_average": {"weighting": "average"},
    "kd_gate": {"weighting": "gate"},
    "kd_gate_valid": {"weighting": "gate", "weighting_params": {"fit_on": "valid"}},
    "kd_single": {"weighting": "single"},
}


def choose_teachers(rows: list[dict[str, Any]], dataset: str, profile: str, seeds: list[int],
                    candidates: tuple[str, ...], k: int = KD_TEACHERS) -> list[str]:
    """The k candidates with the highest mean valid AUC among those run for every seed."""
    by_model: dict[str, dict[int, float]] = {}
    for r in rows:
        if r["dataset"] == dataset and r["profile"] == profile and r["model"] in candidates:
            by_model.setdefault(r["model"], {})[r["seed"]] = r["valid_auc"]
    ranked = sorted((statistics.fmean(v.values()), m) for m, v in by_model.items() if set(seeds) <= set(v))
    if len(ranked) < k:
        raise SystemExit(f"{dataset} {profile}: distilled students need {k} teacher models run for seeds {seeds} "
                         f"(have {[m for _, m in ranked]}); run the zoo's interaction models first")
    return [m for _, m in reversed(ranked[-k:])]


def run_kd_cell(run_mtkd: Callable[..., dict[str, Any]], data_dir: Path, runs: Path, student: str, profile: str,
                seed: int, teachers: list[str]) -> dict[str, Any]:
    """One distilled student: the profile's DNN with `distill` over the teacher runs of this seed."""
    spec = dict(KD_STUDENTS[student])
    if spec["weighting"] == "single":
        teachers = teachers[:1]
        spec["weighting_params"] = {"teacher": teachers[0]}
    refs = [{"name": t, "run": str(runs / f"{t}-{profile}-{seed}")} for t in teachers]
    extra = [f"distill.teachers={json.dumps(refs)}", f"distill.weighting={spec['weighting']}"]
    if "weighting_params" in spec:
        extra.append(f"distill.weighting_params={json.dumps(spec['weighting_params'])}")
    r = run_mtkd(data_dir, runs / f"{student}-{profile}-{seed}", "dnn", profile, seed, extra)
    return {**r, "teachers": teachers}


def kd_lines(cells: dict[tuple[str, str, str], list[dict[str, Any]]]) -> list[str]:
    """Each distilled student against the plain DNN and its best teacher (by mean valid AUC), on test."""
    def mean(key: tuple[str, str, str], metric: str) -> float | None:
        rs = cells.get(key)
        return statistics.fmean(r[metric] for r in rs) if rs else None

    out: list[str] = []
    for (ds, model, profile), rs in sorted(cells.items()):
        if model not in KD_STUDENTS:
            continue
        teachers = rs[0].get("teachers", [])
        best = max(teachers, key=lambda t: mean((ds, t, profile), "valid_auc") or -1.0) if teachers else None
        auc, dnn = mean((ds, model, profile), "test_auc"), mean((ds, "dnn", profile), "test_auc")
        line = f"{ds} {profile} {model} (teachers {', '.join(teachers)}): test AUC {auc:.4f}"
        if dnn is not None:
            line += f", {auc - dnn:+.4f} vs the plain DNN"
        if best is not None and mean((ds, best, profile), "test_auc") is not None:
            line += f", {auc - mean((ds, best, profile), 'test_auc'):+.4f} vs its best teacher ({best})"
        out.append(line)
    return out
