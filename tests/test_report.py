"""The report's pieces on their own: the teachers' ensemble, the table layouts, the plots."""

from __future__ import annotations

import numpy as np
import pytest

from mtkd.distill.ensemble import average_probabilities
from mtkd.report import summarise, to_html, to_markdown
from mtkd.report_plots import _two_and_five, accuracy_latency, teacher_weights


def test_binary_ensemble_is_the_log_odds_of_the_mean_probability():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, size=(500, 3))
    out = average_probabilities("binary", z)
    p = (1 / (1 + np.exp(-z))).mean(1)
    assert out.shape == (500,)
    np.testing.assert_allclose(1 / (1 + np.exp(-out)), p, atol=1e-9)
    # not the mean logit: a confident teacher does not outvote the others in probability space
    assert not np.allclose(out, z.mean(1))
    # saturated teachers stay finite
    assert np.isfinite(average_probabilities("binary", np.full((2, 2), 80.0))).all()


def test_multiclass_ensemble_is_the_log_of_the_mean_softmax():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, size=(200, 4, 5))  # rows, teachers, classes
    out = average_probabilities("multiclass", z)
    e = np.exp(z - z.max(-1, keepdims=True))
    mean = (e / e.sum(-1, keepdims=True)).mean(1)
    assert out.shape == (200, 5)
    np.testing.assert_allclose(np.exp(out), mean, atol=1e-9)
    np.testing.assert_allclose(np.exp(out).sum(1), 1.0, atol=1e-9)


def _row(name: str, kind: str, auc: float, ms: float, best: int | None = 3, weights: dict | None = None) -> dict:
    test = {"auc": auc, "logloss": 0.4, **({f"w.{k}": v for k, v in (weights or {}).items()})}
    runs = [{"test": test, "params": 1000, "best_epoch": best, "train_seconds": 2.0}] * 2
    return summarise(name, kind, "KD <gate>" if kind == "student" else "no KD", runs, ms)


def test_tables_leave_a_missing_best_epoch_blank_and_escape_html():
    rows = [_row("deepfm", "teacher", 0.76, 5.0), _row("ensemble", "ensemble", 0.77, 9.0, best=None),
            _row("kd_gate", "student", 0.765, 1.2, weights={"deepfm": 0.7, "dcn": 0.3})]
    assert rows[1]["best_epoch"] is None and rows[2]["teacher_weights"] == {"deepfm": 0.7, "dcn": 0.3}
    md = to_markdown(rows, "t", ["note with `code`"])
    ens = next(line for line in md.splitlines() if line.startswith("| ensemble"))
    assert ens.endswith("| 9.00 |  | 2.0 |")
    page = to_html(rows, "a <b> title", ["a `x<y` note"])
    assert "a &lt;b&gt; title" in page and "<code>x&lt;y</code>" in page
    assert "<td>KD &lt;gate&gt;</td>" in page and "<b>" not in page


def test_plots_are_drawn_for_multiclass_rows_and_skip_without_weights(tmp_path):
    from matplotlib.image import imread

    rows = [_row("cnn", "teacher", 0.61, 50.0), _row("dnn", "student", 0.58, 1.0),
            _row("kd_policy", "student", 0.60, 1.0)]
    img = imread(accuracy_latency(rows, tmp_path / "a.png", task="multiclass"))
    assert img.shape[1] > 400 and img.std() > 0.01
    assert teacher_weights(rows, tmp_path / "w.png") is None and not (tmp_path / "w.png").exists()


@pytest.mark.parametrize("value,label", [(2.0, "2"), (50.0, "50"), (0.5, "0.5"), (3.0, ""), (70.0, "")])
def test_log_axis_labels_only_twos_and_fives(value, label):
    assert _two_and_five(value, 0) == label


def test_one_seed_has_no_std_rather_than_zero(tmp_path):
    """One seed says nothing about the spread: the table says n/a, not ± 0.0000, and the plot draws."""
    one = summarise("dnn", "student", "no KD", [{"test": {"auc": 0.78, "logloss": 0.38}, "params": 10,
                                                 "best_epoch": 2, "train_seconds": 1.0}], 1.0)
    two = _row("deepfm", "teacher", 0.77, 5.0)
    assert one["test_auc_std"] is None and two["test_auc_std"] == 0.0  # two equal seeds: a real 0
    md = to_markdown([two, one], "t", [])
    assert "0.7800 ± n/a (1 seed)" in md and "0.3800 ± n/a (1 seed)" in md and "0.7700 ± 0.0000" in md
    accuracy_latency([two, one], tmp_path / "a.png")
    assert (tmp_path / "a.png").stat().st_size > 0
