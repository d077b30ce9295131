"""Metrics agree with scikit-learn (and a slow per-group loop for gAUC), ties and edge cases included."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, log_loss, matthews_corrcoef, roc_auc_score

from mtkd.train import metrics as M


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _slow_gauc(y: np.ndarray, s: np.ndarray, g: np.ndarray) -> float:
    num = den = 0.0
    for key in np.unique(g):
        mask = g == key
        if 0 < y[mask].sum() < mask.sum():
            num += mask.sum() * roc_auc_score(y[mask], s[mask])
            den += mask.sum()
    return num / den if den else float("nan")


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 2000)
    s = np.round(rng.random(2000) + 0.3 * y, 1)  # many ties
    assert M.auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auc_edge_cases() -> None:
    y = np.array([0, 1, 0, 1, 1])
    assert M.auc(y, np.full(5, 0.3)) == 0.5
    assert math.isnan(M.auc(np.ones(4), [0.1, 0.2, 0.3, 0.4]))
    assert math.isnan(M.auc(np.zeros(4), [0.1, 0.2, 0.3, 0.4]))
    assert math.isnan(M.auc([], []))
    assert M.auc(y, y * 2.0 - 1.0) == 1.0
    assert M.auc(y, 1.0 - y) == 0.0
    assert math.isnan(M.auc(y, [0.1, np.nan, 0.2, 0.3, 0.4]))


def test_auc_accepts_torch_tensors() -> None:
    y = torch.tensor([0, 1, 1, 0, 1])
    s = torch.tensor([0.1, 0.9, 0.4, 0.4, 0.8], requires_grad=True)
    assert M.auc(y, s) == pytest.approx(roc_auc_score(y.numpy(), s.detach().numpy()))


@pytest.mark.parametrize("seed", range(3))
def test_group_auc_matches_slow_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 3000
    g = rng.integers(0, 150, n) * 7 - 300  # sparse, negative group ids
    y = rng.integers(0, 2, n)
    s = np.round(rng.random(n) + 0.2 * y, 1)
    assert M.group_auc(y, s, g) == pytest.approx(_slow_gauc(y, s, g), abs=1e-12)


def test_group_auc_string_groups_and_single_class_groups() -> None:
    y = np.array([1, 0, 1, 1, 0, 0, 1, 0, 1])
    s = np.array([0.9, 0.1, 0.5, 0.5, 0.5, 0.2, 0.3, 0.3, 0.7])
    g = np.array(["a", "a", "b", "b", "b", "c", "c", "c", "d"])  # "d" has one class only
    assert M.group_auc(y, s, g) == pytest.approx(_slow_gauc(y, s, g), abs=1e-12)
    assert math.isnan(M.group_auc([1, 0], [0.2, 0.3], ["u", "v"]))


def test_logloss_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 1000)
    p = rng.uniform(0.01, 0.99, 1000)
    assert M.logloss(y, p) == pytest.approx(log_loss(y, p), rel=1e-10)
    assert math.isfinite(M.logloss([0, 1], [1.0, 0.0]))


def test_multiclass_logloss_matches_sklearn() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(500, 4))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = rng.integers(0, 4, 500)
    expected = log_loss(y, probs, labels=[0, 1, 2, 3])
    assert M.multiclass_logloss(y, probs) == pytest.approx(expected, rel=1e-10)


def test_calibration() -> None:
    assert M.calibration([1, 0, 0, 0], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(2.0)
    assert math.isnan(M.calibration([0, 0], [0.2, 0.3]))


def test_accuracy_and_macro_f1_match_sklearn() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 5, 800)
    logits = rng.normal(size=(800, 5))
    logits[np.arange(800), y] += 1.0
    pred = logits.argmax(axis=1)
    assert M.accuracy(y, logits) == pytest.approx(accuracy_score(y, pred))
    assert M.macro_f1(y, pred, 5) == pytest.approx(f1_score(y, pred, average="macro"))
    # a class that never occurs in labels nor predictions is skipped, as sklearn does
    y2, p2 = np.array([0, 0, 1, 3]), np.array([0, 1, 1, 1])
    assert M.macro_f1(y2, p2, 6) == pytest.approx(f1_score(y2, p2, average="macro"))
    with pytest.raises(ValueError):
        M.macro_f1([0, 7], [0, 1], 3)
    with pytest.raises(ValueError):
        M.accuracy([0, 1], np.array([0.2, 0.8]))


def test_binary_metrics_from_logits() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 1000)
    logits = rng.normal(size=1000) + y
    g = rng.integers(0, 20, 1000)
    out = M.binary_metrics(y, logits, groups=g)
    p = _sigmoid(logits)
    assert out["logloss"] == pytest.approx(log_loss(y, p), rel=1e-10)
    assert out["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert out["calibration"] == pytest.approx(p.mean() / y.mean())
    assert out["gauc"] == pytest.approx(_slow_gauc(y, p, g), abs=1e-12)
    assert "gauc" not in M.binary_metrics(y, logits)
    # a [n, 1] torch tensor works as well
    t = M.binary_metrics(torch.tensor(y), torch.tensor(logits).view(-1, 1))
    assert t["auc"] == pytest.approx(out["auc"])


def test_binary_threshold_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 777)
    logits = rng.normal(size=777) + 0.8 * y - 0.3
    out = M.binary_metrics(y, logits)
    pred = (logits > 0).astype(int)
    assert out["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-12)
    assert out["f1"] == pytest.approx(f1_score(y, pred), abs=1e-12)
    assert out["mcc"] == pytest.approx(matthews_corrcoef(y, pred), abs=1e-12)
    assert M.metric_mode("valid.mcc") == "max" and M.metric_mode("test.f1") == "max"
    # degenerate predictions: all one class gives MCC 0 and, with no true positive, F1 0 (as sklearn)
    none = M.binary_metrics(y, np.full(777, -1.0))
    assert none["mcc"] == 0.0 == matthews_corrcoef(y, np.zeros(777, int))
    assert none["f1"] == 0.0


def test_binary_logloss_finite_for_extreme_logits() -> None:
    y = np.array([1, 0, 1, 0])
    logits = np.array([100.0, -100.0, -100.0, 100.0])
    out = M.binary_metrics(y, logits)
    assert math.isfinite(out["logloss"])
    assert out["logloss"] == pytest.approx(50.0)  # two rows right (~0), two wrong (100 each)
    assert math.isfinite(out["calibration"])
    # saturated sigmoids do not collapse the ranking: AUC uses the logits themselves
    assert M.binary_metrics([0, 1], [40.0, 50.0])["auc"] == 1.0
    # an overflowed (infinite) logit: 0 on the right side, inf on the wrong one, never nan
    assert M.binary_metrics([1, 0], [np.inf, -np.inf])["logloss"] == 0.0
    assert M.binary_metrics([0, 1], [np.inf, 0.0])["logloss"] == np.inf
    y = np.random.default_rng(0).random(50) > 0.5
    x = np.random.default_rng(1).normal(size=50) * 4
    assert M.binary_metrics(y, x)["logloss"] == pytest.approx(float(np.mean(np.logaddexp(0, x) - y * x)))


def test_multiclass_metrics_and_dispatch() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 600)
    logits = rng.normal(size=(600, 3)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    out = M.compute_metrics("multiclass", y, torch.tensor(logits))
    assert set(out) == {"accuracy", "macro_f1", "logloss"}
    assert out["logloss"] == pytest.approx(log_loss(y, probs, labels=[0, 1, 2]), rel=1e-9)
    assert out["accuracy"] == pytest.approx(accuracy_score(y, probs.argmax(axis=1)))
    assert math.isfinite(M.multiclass_metrics([0], np.array([[-1000.0, 1000.0]]))["logloss"])
    assert set(M.compute_metrics("binary", y > 0, logits[:, 0])) == {
        "auc", "logloss", "calibration", "accuracy", "f1", "mcc"}
    with pytest.raises(ValueError):
        M.compute_metrics("regression", y, logits)


def test_metric_modes() -> None:
    assert M.METRIC_MODES["auc"] == "max" and M.METRIC_MODES["kd_loss"] == "min"
    assert M.metric_mode("valid.gauc") == "max"
    assert M.metric_mode("valid.logloss") == "min"
    with pytest.raises(ValueError):
        M.metric_mode("valid.calibration")


def test_group_auc_large_input_runs() -> None:
    """1e5 rows / 1e4 groups: checks the vectorised path on size, no timing assert."""
    rng = np.random.default_rng(5)
    n = 100_000
    g = rng.integers(0, 10_000, n)
    y = rng.integers(0, 2, n)
    s = np.round(rng.random(n) + 0.1 * y, 2)
    value = M.group_auc(y, s, g)
    assert 0.5 < value < 0.7
