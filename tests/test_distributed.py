"""torch.distributed: real torchrun, two gloo processes on CPU, the `mtkd train` command as users run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mtkd.config import load_train_config
from mtkd.data.prepare import prepare
from mtkd.data.schema import load_schema
from mtkd.data.synthetic import write_synthetic
from mtkd.train.checkpoint import load_checkpoint
from mtkd.train.run import train_run

REPO = Path(__file__).resolve().parents[1]
SETS = ["epochs=2", "batch_size=256", "params.embedding_dim=4", "device=cpu"]


def torchrun(args: list[str], procs: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", "-m", "mtkd",
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def sets(extra: list[str]) -> list[str]:
    return [x for s in SETS + extra for x in ("--set", s)]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dist")
    write_synthetic(root / "s.csv", 6000, seed=8)
    prepare(load_schema(REPO / "configs/datasets/synthetic.yaml"), root / "ds", root / "s.csv")
    return root / "ds"


@pytest.mark.parametrize("sparse", [False, True])
def test_two_ranks_train_one_model(data: Path, tmp_path: Path, sparse: bool) -> None:
    out = tmp_path / "run"
    r = torchrun(["train", "--data", str(data), "--model", "deepfm", "--out", str(out), "--quiet",
                  *sets([f"params.sparse={str(sparse).lower()}"])])
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_run"] == 2 and summary["valid"]["auc"] > 0.6 and summary["world_size"] == 2
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2  # rank 0 alone writes
    assert r.stdout.count("best valid.auc") == 1  # one summary printed
    # each rank took half of every epoch: 2 x ceil(4800 / 2 / 256) steps, not 2 x ceil(4800 / 256)
    train_rows = summary["steps"] // 2
    assert train_rows == -(-(-(-json.loads((data / "manifest.json").read_text())["splits"]["train"]["rows"] // 2))
                            // 256)
    assert load_checkpoint(out / "best.pt")["model"]  # the weights load (the ranks agreed: checked in sync)


def test_two_ranks_distil_with_a_gate(data: Path, tmp_path: Path) -> None:
    """The gate trains beside the student: its gradients are averaged too (the run checks the ranks agree)."""
    teacher = tmp_path / "teacher"
    train_run(load_train_config(None, SETS, model="fm"), data, teacher, progress=False, log=lambda s: None)
    out = tmp_path / "student"
    extra = [f'distill.teachers=[{{"name": "fm", "run": "{teacher}"}}]', "distill.weighting=gate"]
    r = torchrun(["train", "--data", str(data), "--model", "dnn", "--out", str(out), "--quiet", *sets(extra)])
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["valid"]["auc"] > 0.6
    gate = load_checkpoint(out / "best.pt")["objective"]["module0"]  # the gate network's weights
    assert gate["net.0.weight"].shape[1] == 2 and torch.isfinite(gate["net.0.weight"]).all()


def test_two_ranks_with_the_policy(data: Path, tmp_path: Path) -> None:
    """Reinforced selection: the policy averages its REINFORCE gradient over ranks (the run checks
    that every rank's policy ends with the same weights)."""
    teachers = []
    for name in ("fm", "lr"):
        train_run(load_train_config(None, [s for s in SETS if name != "lr" or "embedding" not in s], model=name),
                  data, tmp_path / name, progress=False, log=lambda s: None)
        teachers.append({"name": name, "run": str(tmp_path / name)})
    extra = [f"distill.teachers={json.dumps(teachers)}", "distill.weighting=policy"]
    out = tmp_path / "s"
    r = torchrun(["train", "--data", str(data), "--model", "dnn", "--out", str(out), "--quiet", *sets(extra)])
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["valid"]["auc"] > 0.6
    logged = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert "train.reward" in logged and "train.sel.fm" in logged  # epoch 2: the policy selected and learned


def _sync_worker(rank: int, port: int, results) -> None:
    import torch.distributed as dist

    from mtkd.dist import average_gradients, check_in_sync
    from mtkd.errors import MtkdError

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    dense = torch.nn.Parameter(torch.ones(3))
    table = torch.nn.Embedding(10, 2, sparse=True)
    torch.nn.init.zeros_(table.weight)
    table.weight._mtkd_sparse_table = True
    (dense * (rank + 1.0)).sum().backward()  # rank 0: grad 1, rank 1: grad 2
    if rank == 0:
        table(torch.tensor([1, 1, 4])).sum().backward()  # rank 1 leaves the table without a gradient
    average_gradients([dense, table.weight], 2)
    out = {"dense": dense.grad.tolist(), "table": table.weight.grad.to_dense().sum(1).tolist()}
    check_in_sync([dense], 2)  # equal weights pass
    try:
        check_in_sync([dense + rank], 2)
        out["diverged"] = "not caught"
    except MtkdError as e:
        out["diverged"] = str(e)
    results[rank] = out
    dist.destroy_process_group()


def test_gradient_averaging_and_the_divergence_guard() -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_sync_worker, args=(port, results), nprocs=2, join=True)
    for rank in (0, 1):
        assert results[rank]["dense"] == [1.5, 1.5, 1.5]  # the mean of 1 and 2
        # row 1 was gathered twice on rank 0 (2 x 2 ones), row 4 once (2 ones); halved over 2 ranks
        assert results[rank]["table"][1] == 2.0 and results[rank]["table"][4] == 1.0
        assert sum(results[rank]["table"]) == 3.0
        assert "different weights" in results[rank]["diverged"]
