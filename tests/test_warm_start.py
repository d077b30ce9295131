"""init_from: a run starts from another run's best weights where names and shapes match."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mtkd.config import load_train_config
from mtkd.data.prepare import prepare
from mtkd.data.schema import load_schema
from mtkd.data.store import Dataset
from mtkd.data.synthetic import write_synthetic
from mtkd.errors import MtkdError
from mtkd.models import build_model
from mtkd.train.checkpoint import load_checkpoint
from mtkd.train.run import train_run
from mtkd.train.warm_start import init_from_run

REPO = Path(__file__).resolve().parents[1]
QUIET = dict(progress=False, log=lambda s: None)


def prepared(root: Path, rows: int, seed: int) -> Path:
    write_synthetic(root / "s.csv", rows=rows, seed=seed)
    prepare(load_schema(REPO / "configs/datasets/synthetic.yaml"), root / "ds", root / "s.csv")
    return root / "ds"


@pytest.fixture(scope="module")
def fm_run(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("warm")
    data = prepared(root, 3000, 4)
    cfg = load_train_config(None, ["params.embedding_dim=4", "batch_size=256", "epochs=2", "device=cpu"], model="fm")
    train_run(cfg, data, root / "fm", **QUIET)
    return data, root / "fm"


def test_matching_tensors_are_copied_the_rest_kept(fm_run) -> None:
    data, fm = fm_run
    ds = Dataset(data)
    torch.manual_seed(0)
    nfm = build_model("nfm", ds.feature_map, embedding_dim=4, hidden_units=[8])
    fresh = {k: v.clone() for k, v in nfm.state_dict().items()}
    logs: list[str] = []
    copied = init_from_run(nfm, fm, ds.checksum, logs.append)
    source = load_checkpoint(fm / "best.pt")["model"]
    assert set(copied) == {"embedding.table.weight", "embedding.numeric", "linear_bias"}
    for k, v in nfm.state_dict().items():  # FM's table (with its first-order column) and bias; NFM's MLP fresh
        assert torch.equal(v, source[k] if k in copied else fresh[k]), k
    assert "copied 3 tensors" in logs[0] and f"{len(fresh) - 3} keep" in logs[0]


def test_train_run_with_init_from_starts_from_the_source(fm_run, tmp_path) -> None:
    data, fm = fm_run
    sets = ["params.embedding_dim=4", "params.hidden_units=[8]", "batch_size=256", "epochs=1", "device=cpu"]
    logs: list[str] = []
    cold = train_run(load_train_config(None, sets, model="nfm"), data, tmp_path / "cold", **QUIET)
    warm = train_run(load_train_config(None, sets + [f"init_from={fm}"], model="nfm"), data, tmp_path / "warm",
                     progress=False, log=logs.append)
    assert any(line.startswith(f"init_from {fm}: copied 3 tensors") for line in logs)
    assert warm["valid"] != cold["valid"]  # a different start, the same data order and seed otherwise
    saved = (tmp_path / "warm" / "config.yaml").read_text()
    assert f"init_from: {fm}" in saved


def test_init_from_errors(fm_run, tmp_path) -> None:
    data, fm = fm_run
    ds = Dataset(data)
    model = build_model("nfm", ds.feature_map, embedding_dim=4)
    with pytest.raises(MtkdError, match="not a finished mtkd run"):
        init_from_run(model, tmp_path, ds.checksum)
    with pytest.raises(MtkdError, match="trained on dataset .* ids of different encodings"):
        init_from_run(model, fm, "another-checksum")
    wide = build_model("nfm", ds.feature_map, embedding_dim=6)
    wide.linear_bias = torch.nn.Parameter(torch.zeros(2))  # nothing left that matches
    with pytest.raises(MtkdError, match="none of its 3 tensors matches"):
        init_from_run(wide, fm, ds.checksum)
    other = prepared(tmp_path, 500, 9)
    cfg = load_train_config(None, ["params.embedding_dim=4", "epochs=1", "device=cpu", f"init_from={fm}"],
                            model="nfm")
    with pytest.raises(MtkdError, match="ids of different encodings"):
        train_run(cfg, other, tmp_path / "x", **QUIET)
    json.dumps(cfg.model_dump(mode="json"))  # the option is plain data in the saved config
