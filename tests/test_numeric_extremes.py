"""Numbers at their extremes: bf16 training evaluated in fp32, an outlier at the output prior,
non-finite scores and metrics refused or written as JSON null, never passed on as NaN."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mtkd.train.metrics import auc
from mtkd.train.run import load_run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def toy_data(tmp_path, toy_csv, toy_schema_file, run_cli) -> Path:
    assert run_cli("data", "prepare", "--schema", toy_schema_file, "--train", toy_csv, "--out", tmp_path / "ds")[0] == 0
    return tmp_path / "ds"


def test_a_bf16_run_is_evaluated_in_fp32(tmp_path, toy_data, run_cli):
    """bf16 keeps 8 bits of a logit: evaluated under autocast, close logits tied and the AUC
    that picks the best epoch (and the summary's) was that of rounded scores."""
    run = tmp_path / "bf16"
    assert run_cli("train", "--data", toy_data, "--model", "dnn", "--out", run, "--set", "epochs=2",
                   "--set", "amp=bf16", "--set", "params.embedding_dim=4", "--set", "params.hidden_units=[16]")[0] == 0
    summary = json.loads((run / "summary.json").read_text())
    _, ds, model = load_run(run)
    split = ds.split("test")
    from mtkd.distill.teachers import predict_split

    with torch.no_grad():
        logits = predict_split(model.eval(), ds, "test")[0]
    assert summary["test"]["auc"] == pytest.approx(auc(np.asarray(split.arrays["label"]), logits), abs=1e-9)


@pytest.fixture
def synth_data(tmp_path, run_cli) -> Path:
    from mtkd.data.synthetic import write_synthetic

    write_synthetic(tmp_path / "s.csv", rows=4000, seed=3)
    assert run_cli("data", "prepare", "--schema", REPO / "configs/datasets/synthetic.yaml", "--train",
                   tmp_path / "s.csv", "--out", tmp_path / "synth")[0] == 0
    return tmp_path / "synth"


def test_a_useless_model_is_warned_about(tmp_path, synth_data, run_cli):
    """Finite, so nothing stopped it, and worse than the label rate alone: said, not kept in silence."""
    rc, out, err = run_cli("train", "--data", synth_data, "--model", "dnn", "--out", tmp_path / "hot", "--set", "epochs=2",
                           "--set", "optimizer.lr=30", "--set", "output_prior=false")
    assert rc == 0 and "worse than predicting the training label rate" in out + err
    rc, out, err = run_cli("train", "--data", synth_data, "--model", "lr", "--out", tmp_path / "ok", "--set", "epochs=2")
    assert rc == 0 and "worse than predicting" not in out + err


def test_metrics_of_nan_and_infinite_logits():
    from mtkd.train.metrics import compute_metrics, prior_logloss

    y = np.array([0, 1, 0, 1])
    assert all(np.isnan(v) for v in compute_metrics("binary", y, np.array([0.1, np.nan, 0.3, 0.2])).values())
    assert all(np.isnan(v) for v in compute_metrics("binary", y, np.full(4, np.nan)).values())  # not the negative rate
    logits = np.array([[np.inf, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
    m = compute_metrics("multiclass", np.array([0, 1, 2]), logits)
    expected = -(np.log(np.exp(1) / (2 + np.exp(1))) + np.log(np.exp(2) / (2 + np.exp(2)))) / 3  # row 0 costs 0
    assert m["logloss"] == pytest.approx(expected) and m["accuracy"] == 1.0
    ties = compute_metrics("multiclass", np.array([0, 1]), np.array([[-np.inf] * 3, [0.0, 1.0, 2.0]]))
    assert ties["logloss"] == pytest.approx((np.log(3) - np.log(np.exp(1) / (1 + np.e + np.exp(2)))) / 2)
    assert prior_logloss("binary", [0.75, 0.25], y) == pytest.approx(-(np.log(0.25) + np.log(0.75)) / 2)
    assert prior_logloss("multiclass", [0.5, 0.25, 0.25], np.array([0, 1])) == pytest.approx(
        -(np.log(0.5) + np.log(0.25)) / 2)


def test_a_nan_score_is_an_error_naming_the_row_not_a_probability(tmp_path, toy_data, run_cli):
    """A finite input can overflow inside a model (DeepFM's FM squares value * v: 1e29 gives inf,
    inf - inf NaN): predict wrote `nan` with exit 0 and serve answered {"probabilities": [NaN]}."""
    from conftest import TOY_COLUMNS, toy_rows, write_delimited
    from mtkd.errors import MtkdError
    from mtkd.serve.scorer import Scorer

    run = tmp_path / "deepfm"
    assert run_cli("train", "--data", toy_data, "--model", "deepfm", "--out", run, "--set", "epochs=1")[0] == 0
    rows = toy_rows(5, seed=2)
    rows[3][TOY_COLUMNS.index("rid")] = "1.2e29"
    new = write_delimited(tmp_path / "new.csv", rows)
    rc, _, err = run_cli("predict", run, "--input", new, "--out", tmp_path / "p.csv")
    assert rc == 2 and "new.csv" in err and "line 5" in err and "'rid'" in err and "not a number" in err
    assert not (tmp_path / "p.csv").exists()
    scorer = Scorer.open(run)
    with pytest.raises(MtkdError, match=r"row 0, column 'rid'.*not a number"):
        scorer.score_batch(scorer.rows_to_batch([{"rid": 1.2e29, "x": 1.0, "c1": "v1", "c2": "k1"}]))
    assert np.isfinite(scorer.score_batch(scorer.rows_to_batch([{"rid": 3.0, "c1": "v1"}]))).all()


def test_metrics_and_summary_are_strict_json_with_null_for_nan(tmp_path, toy_csv, toy_schema_file, run_cli):
    """A valid split of one class has no AUC: it was written as a bare NaN, which strict parsers
    (jq, JSON.parse) refuse for the whole file."""
    from conftest import toy_rows, write_delimited

    rows = toy_rows(200, seed=5)
    for r in rows:
        r[0] = "0"
    valid = write_delimited(tmp_path / "raw" / "negatives.csv", rows)
    assert run_cli("data", "prepare", "--schema", toy_schema_file, "--train", toy_csv, "--valid", valid,
                   "--out", tmp_path / "ds", "--split", "0.9,0.1")[0] == 0
    run = tmp_path / "run"
    assert run_cli("train", "--data", tmp_path / "ds", "--model", "lr", "--out", run, "--set", "epochs=1",
                   "--set", "monitor=valid.logloss")[0] == 0

    def strict(text: str):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))

    lines = [strict(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    summary = strict((run / "summary.json").read_text())
    assert lines[-1]["valid.auc"] is None and summary["valid"]["auc"] is None
    assert summary["valid"]["logloss"] > 0
    rc, out, _ = run_cli("evaluate", run, "--split", "valid", "--json")
    assert rc == 0 and strict(out)["auc"] is None
    rc, out, err = run_cli("train", "--data", tmp_path / "ds", "--model", "lr", "--out", run, "--set", "epochs=1",
                           "--set", "monitor=valid.logloss", "--resume")  # prints the finished run's table
    assert rc == 0 and "already finished" in out + err and "nan" in out, err


def test_a_report_row_missing_a_seed_is_nan_not_the_mean_of_the_others():
    from mtkd.report import _mean_std

    assert _mean_std([0.7, 0.8])[0] == pytest.approx(0.75)
    assert all(np.isnan(v) for v in _mean_std([0.7, None, 0.8]))
    assert all(np.isnan(v) for v in _mean_std([0.7, float("nan")]))


@pytest.mark.parametrize("value, what", [("inf", "infinite"), ("1e39", "past float32's range")])
def test_an_infinite_teacher_score_is_refused_at_prepare_with_its_line(tmp_path, run_cli, value, what):
    """A score column (a teacher's output) of inf, or of 1e39 (inf as float32), was prepared without a
    word; the student's KD loss was then NaN, blamed on the learning rate."""
    import yaml

    from conftest import TOY_COLUMNS, toy_rows, write_delimited, toy_schema_dict

    rows = [r + ["0.3"] for r in toy_rows(300, seed=7)]
    rows[41][-1] = value
    raw = write_delimited(tmp_path / "t.csv", rows, header=TOY_COLUMNS + ["tp"])
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(toy_schema_dict(scores=["tp"])))
    rc, _, err = run_cli("data", "prepare", "--schema", tmp_path / "s.yaml", "--train", raw, "--out", tmp_path / "ds")
    assert rc == 2 and "t.csv" in err and "line 43" in err and "'tp'" in err and what in err


def test_huge_values_get_the_error_of_their_transform(tmp_path, run_cli):
    """1e308 overflows a column's float64 mean and spread: that was the error (without a line)
    for every transform, though only standardize reads them. Now `none` names the value's line
    (past float32), and `bucketize` (quantile edges) prepares."""
    import yaml

    from conftest import TOY_COLUMNS, toy_rows, write_delimited, toy_schema_dict

    rows = toy_rows(300, seed=9)
    for i in (10, 11):
        rows[i][TOY_COLUMNS.index("rid")] = "1e308"
    raw = write_delimited(tmp_path / "t.csv", rows)
    for transform, ok in (("none", False), ("bucketize", True)):
        d = toy_schema_dict()
        d["features"][0] = {"name": "rid", "type": "numeric", "transform": transform}
        (tmp_path / f"{transform}.yaml").write_text(yaml.safe_dump(d))
        rc, _, err = run_cli("data", "prepare", "--schema", tmp_path / f"{transform}.yaml", "--train", raw,
                             "--out", tmp_path / transform)
        if ok:
            assert rc == 0, err
        else:
            assert rc == 2 and "line 12" in err and "past float32's range" in err, err


def test_a_nan_label_is_named_as_missing_not_as_empty(tmp_path, toy_schema_file, run_cli):
    from conftest import toy_rows, write_delimited

    rows = toy_rows(100, seed=4)
    rows[5][0] = "nan"
    rc, _, err = run_cli("data", "prepare", "--schema", toy_schema_file, "--train",
                         write_delimited(tmp_path / "t.csv", rows), "--out", tmp_path / "ds")
    assert rc == 2 and "line 7" in err and "a spelling of missing such as NA or nan" in err
