"""The teachers' plain ensemble: the model a distilled student is measured against.

Serving every teacher and averaging their probabilities is what one would do without
distillation; the report puts that ensemble's accuracy, size and latency beside the student
that replaces it (Zhu et al. compare their students with it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mtkd.data.store import Dataset
from mtkd.train.metrics import compute_metrics


def average_probabilities(task: str, logits: np.ndarray) -> np.ndarray:
    """Logits of the mean of the teachers' probabilities. `logits`: [N, T] (binary) or
    [N, T, C] (multi-class); returns [N] or [N, C] (log-probabilities for multi-class)."""
    z = np.asarray(logits, dtype=np.float64)
    if task == "binary":
        p = (1.0 / (1.0 + np.exp(-z))).mean(axis=1)
        p = np.clip(p, 1e-7, 1.0 - 1e-7)
        return np.log(p) - np.log1p(-p)
    z = z - z.max(axis=-1, keepdims=True)
    probs = np.exp(z)
    probs /= probs.sum(axis=-1, keepdims=True)
    return np.log(np.clip(probs.mean(axis=1), 1e-12, None))


def ensemble_metrics(runs: list[Path], dataset: Dataset, split: str = "test") -> dict[str, float]:
    """Metrics on `split` of the probability average of the teacher runs `runs`."""
    from mtkd.distill.teachers import predict_split
    from mtkd.train.run import load_run

    outs = []
    for run in runs:
        cfg, _, model = load_run(run, data=dataset.root)
        outs.append(predict_split(model, dataset, split, cfg.eval_batch_size)[0])
    task = dataset.feature_map.task
    logits = average_probabilities(task, np.stack(outs, axis=1))
    arrays = dataset.split(split).arrays
    groups = np.asarray(arrays["group"]) if task == "binary" and "group" in arrays else None
    return compute_metrics(task, np.asarray(arrays["label"]), logits, groups)


def ensemble_summary(runs: list[Path], teacher_summaries: list[dict[str, Any]], dataset: Dataset) -> dict[str, Any]:
    """A summary shaped like a run's (for `report.summarise`): the ensemble's test metrics,
    and the parameters and training time of all its members together."""
    return {"test": ensemble_metrics(runs, dataset, "test"),
            "params": sum(int(s["params"]) for s in teacher_summaries),
            "best_epoch": None,
            "train_seconds": sum(float(s["train_seconds"]) for s in teacher_summaries)}
