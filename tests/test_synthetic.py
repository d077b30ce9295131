"""Synthetic data: deterministic per seed, a Bayes-optimal AUC that matches the prepared test split,
multi-class generation, and the `mtkd data synth` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.csv as pcsv
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from conftest import PRESETS
from mtkd.data.prepare import prepare
from mtkd.data.schema import schema_from_dict
from mtkd.data.store import Dataset
from mtkd.data.synthetic import N_CAT, N_NUM, write_synthetic

ROWS = 3000


def preset(**overrides) -> dict:
    d = yaml.safe_load((PRESETS / "synthetic.yaml").read_text())
    d.update(overrides)
    return d


def test_same_seed_same_bytes(tmp_path: Path, run_cli) -> None:
    for name, seed in (("a", 4), ("b", 4), ("c", 5)):
        rc, out, err = run_cli("data", "synth", "--rows", 500, "--seed", seed, "--out", tmp_path / f"{name}.csv")
        assert rc == 0, err
        assert "Bayes-optimal" in out
    a, b, c = ((tmp_path / f"{n}.csv").read_bytes() for n in "abc")
    assert a == b and a != c
    assert (tmp_path / "a.csv.meta.json").read_bytes() == (tmp_path / "b.csv.meta.json").read_bytes()
    assert (tmp_path / "a.csv.meta.json").read_bytes() != (tmp_path / "c.csv.meta.json").read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))


def test_columns_and_meta(tmp_path: Path) -> None:
    meta = write_synthetic(tmp_path / "s.csv", ROWS, seed=0)
    table = pcsv.read_csv(tmp_path / "s.csv")
    assert table.num_rows == ROWS
    assert table.column_names == ["label"] + [f"I{i + 1}" for i in range(N_NUM)] + [f"C{i + 1}" for i in range(N_CAT)]
    label = table.column("label").to_numpy()
    assert set(np.unique(label)) == {0, 1}
    assert meta == json.loads((tmp_path / "s.csv.meta.json").read_text())
    assert meta["rows"] == ROWS and meta["label_rate"] == pytest.approx(label.mean())
    for part in ("all_rows", "test_split"):
        assert 0.5 < meta["bayes_optimal"][part]["auc"] < 1.0
        assert meta["bayes_optimal"][part]["logloss"] > 0
    c22 = table.column("C22").to_pylist()  # missing values are empty fields
    assert table.column("I1").null_count > 0 and 0 < c22.count("") < ROWS


def test_bayes_auc_is_that_of_the_prepared_test_split(tmp_path: Path) -> None:
    """p_true, carried as a score column, reproduces the meta's Bayes-optimal test AUC."""
    meta = write_synthetic(tmp_path / "s.csv", ROWS, seed=1, with_truth=True)
    schema = schema_from_dict(preset(scores=["p_true"]))
    m = prepare(schema, tmp_path / "ds", tmp_path / "s.csv")
    bayes = meta["bayes_optimal"]["test_split"]
    assert m["splits"]["test"]["rows"] == bayes["rows"]
    test = Dataset(tmp_path / "ds").split("test")
    auc = roc_auc_score(test.arrays["label"], test.arrays["scores"][:, 0])
    assert auc == pytest.approx(bayes["auc"], abs=1e-6)


def test_multiclass_truth_is_one_column_per_class(tmp_path: Path) -> None:
    """--with-truth on a multi-class file wrote nothing, without a word: each class's true
    probability is a column p_true_K, and they give the meta's Bayes-optimal logloss."""
    meta = write_synthetic(tmp_path / "m.csv", ROWS, seed=1, task="multiclass", classes=3, with_truth=True)
    table = pcsv.read_csv(tmp_path / "m.csv")
    p = np.stack([table.column(f"p_true_{k}").to_numpy() for k in range(3)], 1)
    y = table.column("label").to_numpy()
    assert np.allclose(p.sum(1), 1.0)
    assert -np.log(p[np.arange(len(y)), y]).mean() == pytest.approx(meta["bayes_optimal"]["all_rows"]["logloss"])


def test_preset_prepares_synthetic_data(tmp_path: Path, run_cli) -> None:
    write_synthetic(tmp_path / "s.csv", ROWS, seed=2)
    rc, _, err = run_cli("data", "prepare", "--schema", PRESETS / "synthetic.yaml", "--train", tmp_path / "s.csv",
                         "--out", tmp_path / "ds")
    assert rc == 0, err
    ds = Dataset(tmp_path / "ds")
    assert sum(s["rows"] for s in ds.manifest["splits"].values()) == ROWS
    assert len(ds.feature_map.categorical) == N_CAT and len(ds.feature_map.numeric) == N_NUM
    assert np.isfinite(ds.split("train").arrays["num"]).all()


def test_multiclass(tmp_path: Path, run_cli) -> None:
    rc, out, err = run_cli("data", "synth", "--rows", ROWS, "--seed", 3, "--task", "multiclass", "--classes", 3,
                           "--out", tmp_path / "m.csv")
    assert rc == 0, err
    assert "accuracy" in out
    meta = json.loads((tmp_path / "m.csv.meta.json").read_text())
    assert meta["task"] == "multiclass" and meta["classes"] == 3 and meta["label_rate"] is None
    assert 1 / 3 < meta["bayes_optimal"]["all_rows"]["accuracy"] < 1.0
    label = pcsv.read_csv(tmp_path / "m.csv").column("label").to_numpy()
    assert set(np.unique(label)) == {0, 1, 2}
    schema = schema_from_dict(preset(task="multiclass"))
    m = prepare(schema, tmp_path / "ds", tmp_path / "m.csv")
    assert m["feature_map"]["num_classes"] == 3
    assert set(m["splits"]["train"]["class_counts"]) == {"0", "1", "2"}
    assert sum(m["splits"]["train"]["class_counts"].values()) == m["splits"]["train"]["rows"]


def test_bad_task_is_a_user_error(tmp_path: Path, run_cli) -> None:
    rc, _, err = run_cli("data", "synth", "--rows", 100, "--task", "regression", "--out", tmp_path / "x.csv")
    assert rc == 2 and "--task 'regression'" in err and "Traceback" not in err
    assert not (tmp_path / "x.csv").exists()
