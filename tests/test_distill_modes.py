"""Distillation's combinations of mode, weighting and teacher kind: each one either works for real
(the policy learns in co-training, score columns read as given) or is refused at once by name."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
import torch
import yaml

from mtkd.config import load_train_config
from mtkd.data.prepare import prepare
from mtkd.data.schema import load_schema
from mtkd.data.store import Dataset
from mtkd.data.synthetic import write_synthetic
from mtkd.distill.teachers import TeacherSpec, score_teachers
from mtkd.distill.weighting import WeightContext, build_weighting
from mtkd.errors import ConfigError, MtkdError
from mtkd.train.checkpoint import load_checkpoint
from mtkd.train.run import _build_trainer, train_run

REPO = Path(__file__).resolve().parents[1]
QUIET = dict(progress=False, log=lambda s: None)
SMALL = ["params.embedding_dim=4", "params.hidden_units=[16]", "batch_size=256", "device=cpu"]
COTRAIN = [{"name": "deepfm", "model": "deepfm", "params": {"embedding_dim": 4, "hidden_units": [16]}},
           {"name": "lr", "model": "lr"}]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A binary dataset with a logit column `z` and a probability column `p` (blank in every 50th
    row of `pm`), a DeepFM teacher run, and a 3-class dataset with a score column."""
    root = tmp_path_factory.mktemp("modes")
    write_synthetic(root / "s.csv", rows=2000, seed=5, with_truth=True)
    table = pacsv.read_csv(root / "s.csv")
    p = np.clip(table.column("p_true").to_numpy(), 1e-6, 1 - 1e-6)
    pm = pa.array([None if i % 50 == 7 else float(v) for i, v in enumerate(p)], pa.float64())
    table = table.append_column("z", pa.array(np.log(p / (1 - p)))).append_column("pm", pm)
    pacsv.write_csv(table, root / "s.csv")
    schema = yaml.safe_load((REPO / "configs/datasets/synthetic.yaml").read_text())
    (root / "schema.yaml").write_text(yaml.safe_dump({**schema, "scores": ["z", "pm"]}))
    prepare(load_schema(root / "schema.yaml"), root / "ds", root / "s.csv")
    train_run(load_train_config(None, SMALL + ["epochs=1"], model="deepfm"), root / "ds", root / "deepfm", **QUIET)

    write_synthetic(root / "m.csv", rows=600, seed=6, task="multiclass", classes=3)
    m = pacsv.read_csv(root / "m.csv")
    pacsv.write_csv(m.append_column("s", pa.array(np.linspace(0, 1, m.num_rows))), root / "m.csv")
    mschema = yaml.safe_load((REPO / "configs/datasets/synthetic_multiclass.yaml").read_text())
    (root / "mschema.yaml").write_text(yaml.safe_dump({**mschema, "scores": ["s"]}))
    prepare(load_schema(root / "mschema.yaml"), root / "mds", root / "m.csv")
    return root


def _cfg(*sets: str, teachers: list[dict] | None = None, epochs: int = 2):
    teachers = teachers if teachers is not None else COTRAIN
    return load_train_config(None, [*SMALL, f"epochs={epochs}", f"distill.teachers={json.dumps(teachers)}", *sets],
                             model="dnn")


def test_the_policy_learns_in_co_training(world, tmp_path) -> None:
    """Co-training had none of the policy's hooks: its warm-up never ended (a plain average every
    step, no selection, no reward, the policy untrained) and the run said nothing."""
    c = _cfg("distill.mode=cotrain", "distill.weighting=policy",
             'distill.weighting_params={"warmup_epochs": 1, "reward": "ce"}', epochs=3)
    train_run(c, world / "ds", tmp_path / "run", **QUIET)
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if "train.sel.deepfm" in r]
    assert last and "train.reward" in last[-1] and 0 <= last[-1]["train.sel.lr"] <= 1
    extra = [v for k, v in _flat(load_checkpoint(tmp_path / "run" / "last.pt")).items() if k.endswith("_extra_state")]
    assert len(extra) == 1 and extra[0]["baseline"] is not None and extra[0]["epoch"] == 2, extra


def _flat(state, prefix=""):
    out = {}
    for k, v in (state.items() if isinstance(state, dict) else enumerate(state)):
        if isinstance(v, (dict, list)) and not str(k).endswith("_extra_state"):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_the_instance_baseline_compares_eval_mode_with_eval_mode(world, tmp_path) -> None:
    """The reward after a step is measured in eval mode; the `instance` baseline subtracted the
    reward of the *training* forward, dropout on: every row's advantage was mostly its dropout
    noise. With a step that changes nothing (lr 1e-12) the advantage must now be ~0."""
    teachers = [{"name": "deepfm", "run": str(world / "deepfm")}, {"name": "z", "score": "z", "kind": "logit"}]
    c = _cfg("params.dropout=0.5", "optimizer.lr=1e-12", "distill.weighting=policy",
             'distill.weighting_params={"warmup_epochs": 0, "baseline": "instance"}', teachers=teachers)
    tr = _build_trainer(c, Dataset(world / "ds"), tmp_path / "run", lambda s: None, False, 0, 1)
    tr.model.train()
    tr.objective.on_epoch_start(0)
    policy, seen = tr.objective.weighting, []
    hook = policy.after_student_step

    def spy(*args, **kw):
        logs = hook(*args, **kw)
        seen.append(float(logs["reward"]))
        return logs

    policy.after_student_step = spy
    for b in list(iter(tr.train_loader))[:3]:
        tr._step(b.to(tr.device))
    assert len(seen) == 3 and max(abs(r) for r in seen) < 1e-5, seen


def test_co_training_with_valid_holdout_runs(world, tmp_path) -> None:
    """It crashed with AttributeError ('CoTraining' has no 'teachers') after the config was accepted."""
    c = _cfg("distill.mode=cotrain", "distill.valid_holdout=0.3", "monitor=valid.kd_loss")
    s = train_run(c, world / "ds", tmp_path / "run", **QUIET)
    assert s["valid"]["kd_loss"] > 0 and s["test"]["auc"] > 0.5


@pytest.mark.parametrize("sets, needle", [
    (["distill.mode=cotrain", "distill.hint=0.5"], "co-training has none: drop distill.hint"),
    (["distill.hint=0.5", 'distill.teachers=[{"name": "z", "score": "z", "kind": "logit"}]'],
     "score columns have none"),
    (["distill.valid_holdout=0.2", "monitor=valid.kd_loss", "distill.weighting=policy"], "reads the labels"),
    (["distill.valid_holdout=0.2", "monitor=valid.kd_loss", "distill.weighting=fixed"],
     "AUC on the whole valid split"),
])
def test_combinations_that_cannot_work_are_refused(sets, needle) -> None:
    """hint was ignored in co-training and crashed (torch.stack of nothing) with score teachers
    only; valid_holdout with the policy or score-derived fixed weights read the held-out labels."""
    teachers = COTRAIN if "distill.mode=cotrain" in sets else [{"name": "a", "run": "runs/a"}]
    with pytest.raises(ConfigError) as exc:
        _cfg(*sets, teachers=teachers)
    assert needle in " ".join(str(exc.value).split())
    _cfg("distill.valid_holdout=0.2", "monitor=valid.kd_loss", "distill.weighting=fixed",
         'distill.weighting_params={"weights": [1.0]}', teachers=[{"name": "a", "run": "runs/a"}])  # explicit weights read no labels


def test_score_command_keeps_logit_kind(world, run_cli) -> None:
    """`mtkd score -t score:z:logit` dropped `:logit` and refused logits as 'outside [0, 1]'."""
    rc, _, err = run_cli("score", "--data", world / "ds", "-t", "score:z:logit")
    assert rc == 0, err
    rc, _, err = run_cli("score", "--data", world / "ds", "-t", "score:z")
    assert rc == 2 and "set kind: logit" in err


def test_score_columns_with_gaps_or_on_multiclass_are_named(world) -> None:
    """A blank score gave NaN targets ('training loss is nan; lower the learning rate'); a score
    column on a 3-class task crashed with a shape ValueError."""
    with pytest.raises(MtkdError, match=r"column 'pm' is missing in \d+ of the"):
        score_teachers(Dataset(world / "ds"), [TeacherSpec("pm", score="pm")], log=lambda s: None)
    with pytest.raises(ConfigError, match="fits a binary task; this dataset is multiclass"):
        score_teachers(Dataset(world / "mds"), [TeacherSpec("s", score="s")], log=lambda s: None)


def test_a_killed_scorings_partial_directory_is_swept(world) -> None:
    """Only this process's own leftover was removed: each killed scoring left its .partial-PID
    directory (gigabytes on full Criteo) for good."""
    ds = Dataset(world / "ds")
    spec = TeacherSpec("swept", run=str(world / "deepfm"))  # a name no other test's cache has
    cache, = score_teachers(ds, [spec], log=lambda s: None)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    stale = cache.parent / f".{cache.name}.partial-{dead}"
    stale.mkdir()
    (stale / "train_logits.npy").write_bytes(b"half")
    shutil.rmtree(cache)
    again, = score_teachers(ds, [spec], log=lambda s: None)
    assert again == cache and (cache / "meta.json").exists() and not stale.exists()


def test_random_weighting_evaluates_its_expectation() -> None:
    """Rand-Single drew at evaluation too: valid.kd_loss and w.* moved between evaluations of
    identical weights (and early stopping may watch that kd_loss)."""
    torch.manual_seed(0)
    w = build_weighting("random", 3, "binary")
    ctx = WeightContext(torch.randn(64, 3), torch.randint(0, 2, (64,)).float(), "binary")
    drawn = w(ctx)
    assert set(drawn.sum(1).tolist()) == {1.0} and set(drawn.flatten().tolist()) == {0.0, 1.0}
    w.eval()
    assert torch.equal(w(ctx), torch.full((64, 3), 1 / 3)) and torch.equal(w(ctx), w(ctx))


def test_held_out_gate_keeps_the_sparse_embedding_regulariser(world, tmp_path) -> None:
    """With `fit_on: valid` and `use_features`, the held-out rows' feature pass (no grad) ran
    before reg_loss and reset the rows it reads: the L2 term of sparse tables was silently 0."""
    teachers = [{"name": "deepfm", "run": str(world / "deepfm")}, {"name": "z", "score": "z", "kind": "logit"}]
    regs = []
    for fit_on in ("train", "valid"):
        c = _cfg("params.sparse=true", "params.embedding_regularizer=0.01", "distill.weighting=gate",
                 f'distill.weighting_params={{"use_features": true, "fit_on": "{fit_on}"}}', teachers=teachers)
        tr = _build_trainer(c, Dataset(world / "ds"), tmp_path / fit_on, lambda s: None, False, 0, 1)
        tr.model.train()
        tr.objective.on_epoch_start(0)
        seen, reg = [], tr.model.reg_loss
        tr.model.reg_loss = lambda: (lambda r: (seen.append(r.item()), r)[1])(reg())
        b = next(iter(tr.train_loader)).to(tr.device)
        tr.objective.loss(tr.model, b, tr.model(b))
        regs.append(seen[0])
    assert regs[0] > 0 and regs[1] == pytest.approx(regs[0], rel=1e-6)
