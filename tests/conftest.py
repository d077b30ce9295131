"""Shared fixtures: small raw files written by the tests themselves, and the learning loop of
the tests that check a model can learn something."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

torch.set_flush_denormal(True)  # before torch's thread pool starts (see mtkd.models)
torch.set_num_threads(1)  # tiny test models: a second thread only adds synchronisation

from mtkd.cli import main as cli_main
from mtkd.data.batch import Batch
from mtkd.data.schema import Schema, schema_from_dict

REPO = Path(__file__).resolve().parents[1]
# CI clones the repo into some folder and puts a copy of shared/ beside it as ../shared.
SHARED_DATA = REPO.parent / "shared" / "data"
PRESETS = REPO / "configs" / "datasets"

# Columns of the toy CTR file: a row id, two numerics, two categoricals, a sequence, the label.
TOY_COLUMNS = ["label", "rid", "x", "c1", "c2", "tags"]


def toy_rows(n: int, seed: int = 0, start: int = 0) -> list[list[str]]:
    """Rows of the toy file as strings ('' = missing). `rid` counts from `start`."""
    rng = np.random.default_rng(seed)
    c1 = rng.zipf(1.6, n).clip(max=50)
    c2 = rng.integers(0, 6, n)
    x = np.round(rng.exponential(20.0, n), 2) - 3.0
    x_missing = rng.random(n) < 0.1
    label = (rng.random(n) < 1 / (1 + np.exp(-(0.05 * x + (c2 == 3) - 1)))).astype(int)
    tag_len = rng.integers(0, 6, n)
    rows = []
    for i in range(n):
        tags = "|".join(f"t{int(t)}" for t in rng.integers(0, 12, tag_len[i]))
        rows.append([str(label[i]), str(start + i), "" if x_missing[i] else f"{x[i]:g}",
                     f"v{c1[i]}", f"k{c2[i]}", tags])
    return rows


def write_delimited(path: Path, rows: list[list[str]], header: list[str] | None = TOY_COLUMNS,
                    delimiter: str = ",", newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter=delimiter, lineterminator=newline)
        if header is not None:
            w.writerow(header)
        w.writerows(rows)
    return path


def toy_schema_dict(**overrides: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "name": "toy",
        "format": "csv",
        "label": "label",
        "features": [
            {"name": "rid", "type": "numeric"},
            {"name": "x", "type": "numeric", "transform": ["log", "standardize"], "fill_na": 0},
            {"names": ["c1", "c2"], "type": "categorical", "min_count": 2},
            {"name": "tags", "type": "sequence", "separator": "|", "max_len": 3},
        ],
    }
    d.update(overrides)
    return d


def toy_schema(**overrides: Any) -> Schema:
    return schema_from_dict(toy_schema_dict(**overrides))


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def toy_csv(tmp_path: Path) -> Path:
    """1,000-row CSV with a header (columns TOY_COLUMNS)."""
    return write_delimited(tmp_path / "raw" / "toy.csv", toy_rows(1000, seed=1))


@pytest.fixture
def toy_schema_file(tmp_path: Path) -> Path:
    return write_yaml(tmp_path / "toy.yaml", toy_schema_dict())


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run `mtkd ARGS...` in-process: (exit code, stdout, stderr)."""

    def run(*args: Any) -> tuple[int, str, str]:
        capsys.readouterr()
        rc = cli_main([str(a) for a in args])
        cap = capsys.readouterr()
        return rc, cap.out, cap.err

    return run


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


def leftovers(parent: Path, name: str) -> list[Path]:
    """The dataset directory and any hidden partial/old directories prepare may have left."""
    return [p for p in parent.iterdir() if p.name == name or p.name.startswith(f".{name}.")]


def fit_until(model: torch.nn.Module, train: Batch, held: Batch, *, epochs: int, every: int, batch_size: int,
              lr: float, stop_above: float | None = None) -> tuple[float, int]:
    """Adam and BCE on shuffled mini-batches of `train`; the AUC on `held` every `every` epochs
    (and after the last), stopping once it is past `stop_above`. Returns (last AUC, epochs run):
    a learning check costs the epochs it needs, not the most it allows."""
    from sklearn.metrics import roc_auc_score

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    auc = float("nan")
    for epoch in range(1, epochs + 1):
        model.train()
        for idx in torch.randperm(len(train)).split(batch_size):
            part = train.select(idx)
            opt.zero_grad()
            torch.nn.functional.binary_cross_entropy_with_logits(model(part).logits, part.label).backward()
            opt.step()
        if epoch % every == 0 or epoch == epochs:
            model.eval()
            with torch.no_grad():
                auc = float(roc_auc_score(held.label.numpy(), model(held).logits.numpy()))
            if stop_above is not None and auc > stop_above:
                break
    return auc, epoch
