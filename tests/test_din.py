"""DIN: a history of items attended with the candidate item as the query, through a history that
shares the item's embedding table; on real files from prepare to an ONNX export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mtkd.config import load_train_config
from mtkd.data.prepare import prepare
from mtkd.data.schema import schema_from_dict
from mtkd.serve.export import export_run
from mtkd.train.run import train_run

QUIET = dict(progress=False, log=lambda s: None)


def write_clicks(path: Path, rows: int, seed: int) -> None:
    """A click (1) when the candidate item is in the user's last five items: a match between two
    fields, which attention over the history finds and a mean of the history blurs."""
    rng = np.random.default_rng(seed)
    lines = ["label,user,item,history"]
    for _ in range(rows):
        hist = rng.choice(60, 5, replace=False)
        click = rng.random() < 0.5
        item = rng.choice(hist) if click else rng.choice(np.setdiff1d(np.arange(60), hist))
        lines.append(f"{int(click)},u{rng.integers(100)},i{item},{'|'.join(f'i{h}' for h in hist)}")
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def clicks(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("din")
    write_clicks(root / "train.csv", 6000, 1)
    write_clicks(root / "test.csv", 1000, 2)
    schema = schema_from_dict({"label": "label", "split": {"ratios": [0.9, 0.1]}, "features": [
        {"names": ["user", "item"], "type": "categorical"},
        {"name": "history", "type": "sequence", "max_len": 8, "share_embedding": "item"}]})
    prepare(schema, root / "ds", root / "train.csv", test=root / "test.csv")
    return root


def test_din_finds_the_candidate_in_the_history(clicks: Path) -> None:
    sets = ["epochs=15", "batch_size=256", "patience=15", "device=cpu", "params.embedding_dim=16",
            "optimizer.lr=0.003"]
    din = train_run(load_train_config(None, sets, model="din"), clicks / "ds", clicks / "din", **QUIET)
    dnn = train_run(load_train_config(None, sets, model="dnn"), clicks / "ds", clicks / "dnn", **QUIET)
    assert din["test"]["auc"] > 0.95 and din["test"]["auc"] > dnn["test"]["auc"] + 0.05, \
        (din["test"]["auc"], dnn["test"]["auc"])
    meta = export_run(clicks / "din", clicks / "export", formats=("onnx", "torchscript"))
    assert max(f["parity"]["max_abs_diff"] for f in meta["formats"].values()) <= 1e-4


def test_din_with_dice_learns_and_exports(clicks: Path) -> None:
    """Dice (the paper's activation) in both MLPs: the same task learnt, ONNX and TorchScript
    parity with its running statistics in eval mode."""
    sets = ["epochs=15", "batch_size=256", "patience=15", "device=cpu", "params.embedding_dim=16",
            "optimizer.lr=0.003", "params.activation=dice", "params.attention_activation=dice"]
    din = train_run(load_train_config(None, sets, model="din"), clicks / "ds", clicks / "din_dice", **QUIET)
    assert din["test"]["auc"] > 0.95, din["test"]["auc"]
    meta = export_run(clicks / "din_dice", clicks / "export_dice", formats=("onnx", "torchscript"))
    assert max(f["parity"]["max_abs_diff"] for f in meta["formats"].values()) <= 1e-4
