"""Evaluation metrics for binary (CTR) and multi-class tasks, vectorised with numpy.

Every metric takes whole arrays (numpy or torch) and returns a Python float, accumulated in
float64. Nothing loops over rows or groups in Python, so evaluating millions of rows with
hundreds of thousands of users (gAUC) stays well under a second.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Whether a larger value of a logged quantity is better ("max") or worse ("min"); early stopping
# and "best checkpoint" selection read this. Calibration is left out on purpose: 1.0 is best.
METRIC_MODES: dict[str, str] = {
    "auc": "max",
    "gauc": "max",
    "accuracy": "max",
    "macro_f1": "max",
    "f1": "max",
    "mcc": "max",
    "logloss": "min",
    "loss": "min",
    "kd_loss": "min",
    "kd_loss_avg": "min",
    "ce_loss": "min",
}


# the test metrics `compute_metrics` gives per task (binary adds gauc when the schema has a group)
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("auc", "logloss", "calibration", "accuracy", "f1", "mcc"),
    "multiclass": ("accuracy", "macro_f1", "logloss"),
}


def logged_metrics(task: str, has_group: bool) -> tuple[str, ...]:
    """The metrics `compute_metrics` gives for a task: binary adds gauc with a group column."""
    return TASK_METRICS[task] + (("gauc",) if has_group and task == "binary" else ())


def check_monitor(monitor: str, task: str, dataset: Any, objective_names: tuple[str, ...]) -> None:
    """A `valid.NAME` monitor that no evaluation of this run logs (any without a valid split,
    `valid.gauc` without a group column, `valid.kd_loss` of a supervised run) is refused before
    training: found after the first epoch, it also left an unfinished run that blocked the
    corrected command."""
    from mtkd.errors import MtkdError

    split, _, name = monitor.partition(".")
    if split != "valid":
        return
    if "valid" not in dataset.split_names:
        raise MtkdError(f"monitor {monitor} needs a valid split; {dataset.root} has "
                        f"{', '.join(dataset.split_names)}: prepare it with one, or monitor a train.* quantity")
    if "." in name:  # dotted names (w.NAME, teacher.NAME.auc) are known after the first evaluation
        return
    logged = logged_metrics(task, "group" in dataset.split("valid").arrays) + objective_names
    if name not in logged:
        why = " (gauc needs the schema's `group` column)" if name == "gauc" and task == "binary" else ""
        raise MtkdError(f"monitor {monitor!r} is not logged by this run{why}; it logs "
                        f"{', '.join('valid.' + n for n in logged)}")


def metric_mode(name: str) -> str:
    """Mode ("max"/"min") of a metric, accepting split prefixes such as ``valid.auc``."""
    key = name.rsplit(".", 1)[-1]
    if key not in METRIC_MODES:
        known = ", ".join(sorted(METRIC_MODES))
        raise ValueError(f"metric {name!r} has no known direction; expected one of: {known}")
    return METRIC_MODES[key]


def _np(x: Any) -> np.ndarray:
    """Numpy view of an array-like; torch tensors are detached and moved to the CPU."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _binary_inputs(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray]:
    """Flatten labels to bool and scores to float64, checking that their lengths agree."""
    y = _np(y_true).reshape(-1)
    s = _np(y_score).reshape(-1).astype(np.float64, copy=False)
    if y.shape != s.shape:
        raise ValueError(f"labels have {y.size} rows but scores have {s.size}")
    return y > 0.5, s


def _run_starts(*sorted_keys: np.ndarray) -> np.ndarray:
    """Boolean mask marking the first row of each run of equal keys in sorted arrays."""
    n = sorted_keys[0].size
    new = np.zeros(n, dtype=bool)
    if n:
        new[0] = True
        for k in sorted_keys:
            new[1:] |= k[1:] != k[:-1]
    return new


def _tie_ranks(new_run: np.ndarray, offset: np.ndarray | int = 0) -> np.ndarray:
    """1-based average ranks of sorted rows, given run starts; ``offset`` is each row's group start.

    A run of ties covering sorted positions a..b-1 gets the mean rank (a + 1 + b) / 2, the
    Mann-Whitney convention that makes tied positive/negative pairs count one half.
    """
    n = new_run.size
    starts = np.flatnonzero(new_run)
    ends = np.append(starts[1:], n)
    run_id = np.cumsum(new_run) - 1
    avg = (starts + 1 + ends) / 2.0
    return avg[run_id] - offset


def auc(y_true: Any, y_score: Any) -> float:
    """ROC AUC via the Mann-Whitney U statistic with average ranks for ties, O(n log n).

    Returns nan when only one class is present (AUC is undefined) or any score is nan.
    """
    y, s = _binary_inputs(y_true, y_score)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="stable")
    s_sorted = s[order]
    if np.isnan(s_sorted[-1]):  # nan sorts last
        return float("nan")
    ranks = _tie_ranks(_run_starts(s_sorted))
    rank_sum = float(ranks[y[order]].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * float(n_neg))


def group_auc(y_true: Any, y_score: Any, groups: Any) -> float:
    """gAUC: mean of per-group AUC weighted by group size, over groups with both classes.

    One lexsort by (group, score) gives every group's ranks at once; per-group rank sums come
    from ``np.bincount``. Returns nan when no group contains both classes.
    """
    y, s = _binary_inputs(y_true, y_score)
    g = _np(groups).reshape(-1)
    if g.shape != y.shape:
        raise ValueError(f"labels have {y.size} rows but groups have {g.size}")
    if y.size == 0 or np.isnan(s).any():
        return float("nan")
    if g.dtype.kind not in "iub":
        g = np.unique(g, return_inverse=True)[1].reshape(-1)
    order = np.lexsort((s, g))
    g_sorted, s_sorted, y_sorted = g[order], s[order], y[order]
    new_group = _run_starts(g_sorted)
    gid = np.cumsum(new_group) - 1
    group_start = np.flatnonzero(new_group)
    ranks = _tie_ranks(_run_starts(g_sorted, s_sorted), offset=group_start[gid])
    n_groups = group_start.size
    size = np.bincount(gid, minlength=n_groups).astype(np.float64)
    n_pos = np.bincount(gid, weights=y_sorted, minlength=n_groups)
    rank_sum = np.bincount(gid, weights=ranks * y_sorted, minlength=n_groups)
    n_neg = size - n_pos
    valid = (n_pos > 0) & (n_neg > 0)
    if not valid.any():
        return float("nan")
    n_pos, n_neg, rank_sum, size = n_pos[valid], n_neg[valid], rank_sum[valid], size[valid]
    group_aucs = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return float(np.dot(group_aucs, size) / size.sum())


def logloss(y_true: Any, p: Any, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities, clipped to [eps, 1 - eps]."""
    y, prob = _binary_inputs(y_true, p)
    if y.size == 0:
        return float("nan")
    prob = np.clip(prob, eps, 1.0 - eps)
    return float(-np.mean(np.where(y, np.log(prob), np.log1p(-prob))))


def multiclass_logloss(y_true: Any, probs: Any, eps: float = 1e-7) -> float:
    """Mean cross-entropy of integer labels against class probabilities ``[n, C]``."""
    y, pr = _class_inputs(y_true, probs)
    if y.size == 0:
        return float("nan")
    picked = np.take_along_axis(pr, y[:, None], axis=1)[:, 0]
    return float(-np.mean(np.log(np.clip(picked.astype(np.float64), eps, 1.0))))


def calibration(y_true: Any, p: Any) -> float:
    """Predicted CTR over observed CTR (1.0 is perfectly calibrated); nan without positives."""
    y, prob = _binary_inputs(y_true, p)
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    return float(prob.sum() / n_pos)


def _class_inputs(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Integer labels and a ``[n, C]`` score matrix, checked for matching rows."""
    y = _np(y_true).reshape(-1).astype(np.int64, copy=False)
    x = _np(scores)
    if x.ndim != 2 or x.shape[0] != y.size:
        raise ValueError(f"expected scores of shape [{y.size}, C], got {list(x.shape)}")
    return y, x


def accuracy(y_true: Any, probs_or_logits: Any) -> float:
    """Share of rows whose arg-max class is the label (probabilities or logits alike)."""
    y, x = _class_inputs(y_true, probs_or_logits)
    if y.size == 0:
        return float("nan")
    return float(np.mean(x.argmax(axis=1) == y))


def macro_f1(y_true: Any, pred: Any, num_classes: int) -> float:
    """Unweighted mean F1 over classes that occur in the labels or the predictions.

    Classes absent from both are skipped, as scikit-learn does when ``labels`` is not given.
    """
    y = _np(y_true).reshape(-1).astype(np.int64, copy=False)
    yp = _np(pred).reshape(-1).astype(np.int64, copy=False)
    if y.shape != yp.shape:
        raise ValueError(f"labels have {y.size} rows but predictions have {yp.size}")
    if y.size and (min(y.min(), yp.min()) < 0 or max(y.max(), yp.max()) >= num_classes):
        raise ValueError(f"class ids must lie in [0, {num_classes})")
    tp = np.bincount(y[y == yp], minlength=num_classes).astype(np.float64)
    support = np.bincount(y, minlength=num_classes) + np.bincount(yp, minlength=num_classes)
    present = support > 0
    if not present.any():
        return float("nan")
    return float(np.mean(2.0 * tp[present] / support[present]))


def confusion(y_true: Any, y_pred: Any) -> tuple[float, float, float, float]:
    """(TP, FP, FN, TN) of 0/1 labels against 0/1 predictions, as floats (products stay exact)."""
    y = _np(y_true).reshape(-1) > 0.5
    yp = _np(y_pred).reshape(-1) > 0.5
    tp = float(np.count_nonzero(y & yp))
    fp = float(np.count_nonzero(~y & yp))
    fn = float(np.count_nonzero(y & ~yp))
    return tp, fp, fn, float(y.size) - tp - fp - fn


def f1(y_true: Any, y_pred: Any) -> float:
    """F1 of the positive class (GLUE's MRPC / QQP score); 0 when there is no positive at all."""
    tp, fp, fn, _ = confusion(y_true, y_pred)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def mcc(y_true: Any, y_pred: Any) -> float:
    """Matthews correlation (GLUE's CoLA score): 0 when a margin is empty, as scikit-learn gives."""
    tp, fp, fn, tn = confusion(y_true, y_pred)
    den = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    return (tp * tn - fp * fn) / np.sqrt(den) if den else 0.0


def _softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + exp(x)) without overflow for large |x|."""
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def _binary_logloss(y: np.ndarray, x: np.ndarray) -> float:
    """softplus(-x) for positives, softplus(x) for negatives (`y` bool)."""
    return float(np.mean(_softplus(np.where(y, -x, x))))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function that never evaluates exp of a large positive number."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _log_softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax, shifted by the row maximum for stability; a row with a +inf logit
    is its limit (all mass on its infinite classes), one of -inf logits alone uniform (all tie),
    not inf - inf = nan."""
    m = x.max(axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):
        z = np.where(np.isposinf(m), np.where(np.isposinf(x), 0.0, -np.inf),
                     np.where(np.isneginf(m), 0.0, x - np.where(np.isinf(m), 0.0, m)))
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def binary_metrics(y_true: Any, logits: Any, groups: Any = None) -> dict[str, float]:
    """AUC, logloss, calibration (and gAUC when ``groups`` is given) from one logit per row; and,
    at the 0.5 threshold, accuracy, F1 and the Matthews correlation (the GLUE scores of binary
    text tasks; cheap, so always logged).

    AUC ranks the logits themselves, so rows whose sigmoid saturates to the same float still
    rank correctly; logloss is softplus(-x) for a positive and softplus(x) for a negative: exact
    for any logit (an infinite one costs 0 on the right side, inf on the wrong one; never nan).
    """
    y, x = _binary_inputs(y_true, logits)
    pred = x > 0
    nan = float("nan")
    out = {
        "auc": auc(y, x),
        "logloss": _binary_logloss(y, x) if y.size else nan,
        "calibration": calibration(y, _sigmoid(x)),
        "accuracy": float(np.mean(pred == (y > 0.5))) if y.size else nan,
        "f1": f1(y, pred) if y.size else nan,
        "mcc": mcc(y, pred) if y.size else nan,
    }
    if groups is not None:
        out["gauc"] = group_auc(y, x, groups)
    return out


def multiclass_metrics(y_true: Any, logits: Any) -> dict[str, float]:
    """Accuracy, macro F1 and cross-entropy (via log-softmax) from ``[n, C]`` logits."""
    y, x = _class_inputs(y_true, logits)
    x = x.astype(np.float64, copy=False)
    if y.size == 0:
        return {"accuracy": float("nan"), "macro_f1": float("nan"), "logloss": float("nan")}
    logp = np.take_along_axis(_log_softmax(x), y[:, None], axis=1)[:, 0]
    return {
        "accuracy": accuracy(y, x),
        "macro_f1": macro_f1(y, x.argmax(axis=1), x.shape[1]),
        "logloss": float(-logp.mean()),
    }


def compute_metrics(task: str, y_true: Any, logits: Any, groups: Any = None) -> dict[str, float]:
    """Metrics of a task ("binary" or "multiclass") from model logits; ``groups`` is binary only.
    A NaN logit makes every metric NaN: counted as a row on either side of a threshold it gave an
    accuracy (all-NaN logits scored the negative rate)."""
    if task not in ("binary", "multiclass"):
        raise ValueError(f"unknown task {task!r}; expected 'binary' or 'multiclass'")
    out = binary_metrics(y_true, logits, groups) if task == "binary" else multiclass_metrics(y_true, logits)
    if np.isnan(_np(logits)).any():
        out = {k: float("nan") for k in out}
    return out


def prior_logloss(task: str, frequencies: Any, y_true: Any) -> float:
    """The logloss of predicting the training label frequencies on every row: the bar any model
    must clear (one above it predicts worse than knowing nothing of the row)."""
    f = np.clip(np.asarray(frequencies, dtype=np.float64), 1e-12, 1.0)
    y = _np(y_true)
    if task == "binary":
        return _binary_logloss(y > 0.5, np.full(y.shape, np.log(f[1] / max(1 - f[1], 1e-12))))
    return float(-np.log(f[y.astype(np.int64)]).mean())


def worse_than_prior(dataset: Any, task: str, valid: dict[str, float]) -> str | None:
    """A warning when the kept model predicts worse than the training label rate alone: finite,
    so no error stopped it, and yet useless (a learning rate far too high, unscaled inputs)."""
    ll = valid.get("logloss")
    if ll is None or not dataset.split("train").rows:
        return None
    freqs = getattr(dataset, "label_frequencies", lambda: None)()  # the manifest's, without a pass
    if freqs is None:  # a merged or subset dataset: from its own training labels
        train = np.asarray(dataset.split("train").arrays["label"])
        freqs = np.array([1 - train.mean(), train.mean()]) if task == "binary" else \
            np.bincount(train.astype(np.int64), minlength=dataset.feature_map.output_dim) / train.size
    prior = prior_logloss(task, freqs, np.asarray(dataset.split("valid").arrays["label"]))
    if ll <= prior:
        return None
    return (f"warning: the kept model's valid logloss {ll:.4f} is worse than predicting the training label rate "
            f"on every row ({prior:.4f}): it learned nothing usable. Check the learning rate and the numeric "
            "columns' transforms (unscaled counts), then train again")
