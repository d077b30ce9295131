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
