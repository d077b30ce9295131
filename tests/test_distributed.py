"""torch.distributed: real torchrun, two gloo processes on CPU, the `mtkd train` command as users run it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
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
    assert r.returncode == 0, r.stderr[-20000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_run"] == 2 and summary["valid"]["auc"] > 0.6 and summary["world_size"] == 2
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2  # rank 0 alone writes
    assert r.stdout.count("best valid.auc") == 1  # one summary printed
    # each rank took half of every epoch: 2 x ceil(4800 / 2 / 256) steps, not 2 x ceil(4800 / 256)
    train_rows = summary["steps"] // 2
    assert train_rows == -(-(-(-json.loads((data / "manifest.json").read_text())["splits"]["train"]["rows"] // 2))
                            // 256)
    assert load_checkpoint(out / "best.pt")["model"]  # the weights load (the ranks agreed: checked in sync)
    # each rank scored half of valid and test; gathered, the metrics are those of one process
    for split in ("valid", "test"):
        alone = evaluate_in_one_process(out, split)
        assert summary[split]["auc"] == pytest.approx(alone["auc"], abs=1e-7)
        assert summary[split]["logloss"] == pytest.approx(alone["logloss"], abs=1e-6)


def test_two_ranks_at_half_the_batch_optimise_as_one_process(data: Path, tmp_path: Path) -> None:
    """The README's promise: 2 ranks at batch_size / 2 take one process's steps (each step reads
    the rows of its batch, the gradients averaged), so the run ends with its weights, up to the
    float order of the sums. Shards of contiguous blocks gave AUC 0.7628 against 0.7667."""
    base = [s for s in SETS if not s.startswith("batch_size")]
    one = tmp_path / "one"
    train_run(load_train_config(None, [*base, "batch_size=256"], model="dnn"), data, one, progress=False,
              log=lambda s: None)
    two = tmp_path / "two"
    r = torchrun(["train", "--data", str(data), "--model", "dnn", "--out", str(two), "--quiet",
                  *[x for s in [*base, "batch_size=128"] for x in ("--set", s)]])
    assert r.returncode == 0, r.stderr[-20000:]
    a, b = (json.loads((d / "summary.json").read_text()) for d in (one, two))
    for split in ("valid", "test"):
        assert b[split]["auc"] == pytest.approx(a[split]["auc"], abs=1e-5), split
        assert b[split]["logloss"] == pytest.approx(a[split]["logloss"], abs=1e-5), split
    wa, wb = (load_checkpoint(d / "best.pt")["model"] for d in (one, two))
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-4


def test_a_user_error_under_torchrun_is_one_whole_line_per_rank(tmp_path: Path) -> None:
    """Each rank reports the error on one line naming its rank: two prints per rank interleaved
    into "error: error: DIR: ... / DIR: ..."."""
    r = torchrun(["train", "--data", str(tmp_path / "nothing"), "--model", "dnn", "--out", str(tmp_path / "r")])
    assert r.returncode != 0
    for rank in (0, 1):
        line = f"error: rank {rank}: {tmp_path / 'nothing'}: not a prepared dataset"
        assert any(x.startswith(line) for x in r.stderr.splitlines()), r.stderr[-3000:]


def evaluate_in_one_process(run: Path, split: str = "valid") -> dict[str, float]:
    """The run's best weights (model and objective) evaluated by a plain, single-process Trainer."""
    from mtkd.distill.build import build_objective
    from mtkd.train.run import load_run
    from mtkd.train.trainer import Trainer

    cfg, dataset, model = load_run(run)
    objective = build_objective(cfg, dataset, model, log=lambda s: None)
    objective.load_state_dict(load_checkpoint(run / "best.pt")["objective"])
    return Trainer(cfg, dataset, model, objective, run, log=lambda s: None, progress=False).evaluate(split)


@pytest.mark.parametrize("mode", ["offline", "cotrain"])
def test_two_ranks_distil_with_a_gate(data: Path, tmp_path: Path, mode: str) -> None:
    """The gate (and co-trained teachers) train beside the student: their gradients are averaged
    too (the run checks the ranks agree), and the sharded evaluation's kd_loss, gate weights and
    teacher metrics are summed and gathered over the ranks to what one process computes."""
    if mode == "offline":
        teacher = tmp_path / "teacher"
        train_run(load_train_config(None, SETS, model="fm"), data, teacher, progress=False, log=lambda s: None)
        extra = [f'distill.teachers=[{{"name": "fm", "run": "{teacher}"}}]']
    else:
        extra = ['distill.teachers=[{"name": "fm", "model": "fm"}, {"name": "lr", "model": "lr"}]',
                 "distill.mode=cotrain"]
    out = tmp_path / "student"
    r = torchrun(["train", "--data", str(data), "--model", "dnn", "--out", str(out), "--quiet",
                  *sets([*extra, "distill.weighting=gate"])])
    assert r.returncode == 0, r.stderr[-20000:]
    if mode == "offline":  # rank 0 scored the teacher before rank 1 built its objective: once, not twice
        assert r.stderr.count("teacher fm: scored") == 1 and r.stderr.count("teacher fm: cached") == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["valid"]["auc"] > 0.6
    gate = [m["net.0.weight"] for m in load_checkpoint(out / "best.pt")["objective"].values() if "net.0.weight" in m]
    assert len(gate) == 1 and torch.isfinite(gate[0]).all()  # the gate network's weights
    alone = evaluate_in_one_process(out)
    logged = {k for k in summary["valid"] if k.startswith(("kd_loss", "w.", "teacher."))}
    assert "kd_loss" in logged and ("teacher.fm.auc" in logged) == (mode == "cotrain")
    for k in logged | {"auc", "logloss"}:
        assert summary["valid"][k] == pytest.approx(alone[k], rel=1e-5, abs=1e-6), k


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
    assert r.returncode == 0, r.stderr[-20000:]
    assert json.loads((out / "summary.json").read_text())["valid"]["auc"] > 0.6
    for split in ("train", "valid", "test"):  # rank 0 encoded the policy's state; rank 1 read its file
        assert r.stderr.count(f"policy state of {split}: encoded") + r.stdout.count(f"policy state of {split}: "
                                                                                    "encoded") == 1, split
    logged = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert "train.reward" in logged and "train.sel.fm" in logged  # epoch 2: the policy selected and learned


def test_two_ranks_resume_after_a_kill(data: Path, tmp_path: Path) -> None:
    """torchrun killed (SIGKILL to the whole job) after an epoch, then `--resume`: both ranks continue
    from rank 0's last.pt and the run ends as an uninterrupted one does."""
    args = ["train", "--data", str(data), "--model", "deepfm", "--quiet",
            *sets(["epochs=6", "batch_size=16", "patience=6"])]
    full = torchrun([*args, "--out", str(tmp_path / "full")])
    assert full.returncode == 0, full.stderr[-20000:]
    twice = torchrun([*args, "--out", str(tmp_path / "full")])  # again without --resume: each rank refuses
    assert twice.returncode != 0 and "already holds a finished run" in twice.stderr
    assert "Connection closed by peer" not in twice.stderr, twice.stderr[-5000:]  # rank 1 no longer waits on rank 0
    cut = tmp_path / "cut"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "mtkd",
           *args, "--out", str(cut)]
    job = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    deadline = time.monotonic() + 120
    metrics = cut / "metrics.jsonl"
    while time.monotonic() < deadline and job.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 1 and (cut / "last.pt").exists():
            break
        time.sleep(0.02)
    assert job.poll() is None, "the run ended before it could be interrupted"
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    done = len(metrics.read_text().splitlines())
    assert 1 <= done < 6 and not (cut / "summary.json").exists()
    again = torchrun([*args, "--out", str(cut), "--resume"])
    assert again.returncode == 0, again.stderr[-20000:]
    a, b = (json.loads((d / "summary.json").read_text()) for d in (tmp_path / "full", cut))
    assert a["epochs_run"] == b["epochs_run"] == 6
    for split in ("valid", "test"):
        assert b[split]["auc"] == pytest.approx(a[split]["auc"], abs=1e-6)
        assert b[split]["logloss"] == pytest.approx(a[split]["logloss"], abs=1e-6)


def _sync_worker(rank: int, port: int, results) -> None:
    import torch.distributed as dist

    from mtkd.dist import all_gather_rows, all_sum, all_sum_named, average_gradients, check_in_sync
    from mtkd.errors import MtkdError
    from mtkd.train.running import RunningMeans

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
    rows = torch.arange(3 * rank + 2.0).view(-1, 1)  # rank 0: 2 rows, rank 1: 5 rows
    out["gathered"] = all_gather_rows(rows)[0][:, 0].tolist()
    out["summed"] = all_sum(torch.tensor([rank + 1.0, 10.0])).tolist()
    out["named"] = all_sum_named({"a": 1.0, "b": 2.0} if rank == 0 else {"a": 3.0, "c": 5.0})
    # training means over both ranks' rows: rank 0 saw 2 rows at loss 1, rank 1 six at loss 3;
    # `kd` was logged by rank 1 only, `w` by both (per rank samples/s add up)
    running = RunningMeans(torch.device("cpu"))
    n = 2 if rank == 0 else 6
    running.add(torch.tensor(1.0 + 2 * rank), {"w": torch.tensor(float(rank))}, n)
    if rank == 1:
        running.add(torch.tensor(3.0), {"kd": torch.tensor(0.5), "w": torch.tensor(1.0)}, 6)
    out["means"] = running.means({"samples_per_s": 10.0 * (rank + 1)})
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
        assert results[rank]["gathered"] == [0.0, 1.0, 0.0, 1.0, 2.0, 3.0, 4.0]  # uneven shards, rank order
        assert results[rank]["summed"] == [3.0, 20.0]
        assert results[rank]["named"] == {"a": 4.0, "b": 2.0, "c": 5.0}
        assert results[rank]["means"] == pytest.approx({"train.loss": (2 * 1 + 12 * 3) / 14, "train.w": 12 / 14,
                                                        "train.kd": 0.5, "train.samples_per_s": 30.0})
