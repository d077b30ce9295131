"""Multi-class end to end: synthetic K-class data through prepare, teachers, KD (KL) and the policy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mtkd.config import load_train_config
from mtkd.data.prepare import prepare
from mtkd.data.schema import load_schema
from mtkd.data.store import Dataset
from mtkd.data.synthetic import write_synthetic
from mtkd.train.run import train_run

REPO = Path(__file__).resolve().parents[1]
QUIET = dict(progress=False, log=lambda s: None)
BASE = ["params.embedding_dim=4", "params.hidden_units=[16]", "batch_size=256", "epochs=2", "device=cpu"]


@pytest.fixture(scope="module")
def mc(tmp_path_factory):
    root = tmp_path_factory.mktemp("mc")
    meta = write_synthetic(root / "m.csv", rows=3000, seed=4, task="multiclass", classes=4)
    prepare(load_schema(REPO / "configs/datasets/synthetic_multiclass.yaml"), root / "ds", root / "m.csv")
    return root, meta


def test_multiclass_data_and_teacher(mc):
    root, meta = mc
    ds = Dataset(root / "ds")
    assert ds.feature_map.task == "multiclass" and ds.feature_map.num_classes == 4
    y = np.asarray(ds.split("train").arrays["label"])
    assert y.dtype == np.int32 and set(np.unique(y)) <= {0, 1, 2, 3}
    s = train_run(load_train_config(None, BASE, model="deepfm"), root / "ds", root / "t1", **QUIET)
    assert {"accuracy", "macro_f1", "logloss"} <= set(s["test"])
    assert s["monitor"] == "valid.accuracy"
    assert s["test"]["accuracy"] > 0.3  # 4 classes: chance ~0.25
    assert 0 < meta["bayes_optimal"]["test_split"]["accuracy"] <= 1


@pytest.mark.parametrize("weighting", ["gate", "policy", "confidence", "lr_ensemble"])
def test_multiclass_distillation(mc, weighting, tmp_path):
    root, _ = mc
    if not (root / "t2" / "summary.json").exists():
        train_run(load_train_config(None, BASE, model="dcn"), root / "ds", root / "t2", **QUIET)
    if not (root / "t1" / "summary.json").exists():
        train_run(load_train_config(None, BASE, model="deepfm"), root / "ds", root / "t1", **QUIET)
    teachers = [{"name": "deepfm", "run": str(root / "t1")}, {"name": "dcn", "run": str(root / "t2")}]
    c = load_train_config(None, BASE + [f"distill.teachers={json.dumps(teachers)}",
                                        f"distill.weighting={weighting}", "distill.temperature=2.0",
                                        'distill.weighting_params={"warmup_epochs": 1}' if weighting == "policy"
                                        else "distill.alpha=0.5"], model="dnn")
    s = train_run(c, root / "ds", tmp_path / weighting, **QUIET)
    assert s["valid"]["kd_loss"] >= 0 and s["test"]["accuracy"] > 0.25
