"""Distillation: KD losses, weightings, the gate, the teacher cache, co-training, kd_loss stopping."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mtkd.config import load_train_config
from mtkd.data.prepare import prepare
from mtkd.data.schema import load_schema
from mtkd.data.store import Dataset
from mtkd.data.synthetic import write_synthetic
from mtkd.distill.losses import HintRegression, kd_loss, logit_mse, soft_bce, soft_kl
from mtkd.distill.objectives import CoTraining
from mtkd.distill.teachers import TeacherSet, TeacherSpec, score_teachers
from mtkd.distill.weighting import WEIGHTINGS, WeightContext, build_weighting, mixture
from mtkd.errors import ConfigError, MtkdError
from mtkd.models import build_model
from mtkd.train.run import train_run

REPO = Path(__file__).resolve().parents[1]
QUIET = dict(progress=False, log=lambda s: None)


# ---------------------------------------------------------------- losses
def test_soft_bce_matches_hand_computation():
    zs, zt, t = torch.tensor([0.3, -1.2]), torch.tensor([2.0, -0.5]), 2.0
    got = soft_bce(zs, zt, t)
    for i in range(2):
        ps, pt = 1 / (1 + math.exp(-zs[i] / t)), 1 / (1 + math.exp(-zt[i] / t))
        want = -(pt * math.log(ps) + (1 - pt) * math.log(1 - ps)) * t * t
        assert got[i].item() == pytest.approx(want, rel=1e-5)


def test_kl_matches_hand_computation():
    zs = torch.tensor([[1.0, 0.0, -1.0]])
    zt = torch.tensor([[0.5, 0.5, 2.0]])
    t = 3.0
    ps = np.exp(zs.numpy()[0] / t) / np.exp(zs.numpy()[0] / t).sum()
    pt = np.exp(zt.numpy()[0] / t) / np.exp(zt.numpy()[0] / t).sum()
    want = float((pt * np.log(pt / ps)).sum() * t * t)
    assert soft_kl(zs, zt, t).item() == pytest.approx(want, rel=1e-5)
    assert kd_loss("bce", zs, zt, t).item() == pytest.approx(want, rel=1e-5)  # multi-class -> KL


def test_binary_kl_is_the_bernoulli_kl_per_row():
    """Binary logits [B]: a softmax over them ran across the batch (one number, blind to a
    shift of every teacher logit) and crashed at evaluation."""
    zs, zt, t = torch.tensor([0.3, -1.0, 2.0]), torch.tensor([0.3, 1.0, -2.0]), 2.0
    got = kd_loss("kl", zs, zt, t)
    assert got.shape == (3,)
    ps, pt = torch.sigmoid(zs / t).double(), torch.sigmoid(zt / t).double()
    want = (pt * (pt / ps).log() + (1 - pt) * ((1 - pt) / (1 - ps)).log()) * t * t
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-6)
    assert abs(got[0].item()) < 1e-6  # zero where the student matches the teacher
    assert not torch.allclose(kd_loss("kl", zs, zt + 5, t), got)
    zs.requires_grad_(True)  # the gradient is soft BCE's
    g_kl, = torch.autograd.grad(kd_loss("kl", zs, zt, t).sum(), zs)
    g_bce, = torch.autograd.grad(soft_bce(zs, zt, t).sum(), zs)
    np.testing.assert_allclose(g_kl.numpy(), g_bce.numpy(), atol=1e-6)


def test_mse_and_hint():
    assert logit_mse(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0])).tolist() == [1.0, 4.0]
    hint = HintRegression(3, 2)
    with torch.no_grad():
        hint.proj.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]))
        hint.proj.bias.zero_()
    out = hint(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[0.0, 0.0]]))
    assert out.item() == pytest.approx((1 + 4) / 2)


# ---------------------------------------------------------------- weightings
@pytest.mark.parametrize("name", sorted(WEIGHTINGS))
@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_every_weighting_sums_to_one(name, task):
    torch.manual_seed(0)
    b, t, c = 32, 3, 4
    tl = torch.randn(b, t) if task == "binary" else torch.randn(b, t, c)
    label = torch.randint(0, 2, (b,)).float() if task == "binary" else torch.randint(0, c, (b,))
    kw = {"teacher_scores": [0.7, 0.8, 0.75]} if name == "fixed" else {}
    if name == "gate":
        kw["num_classes"] = 1 if task == "binary" else c
    w = build_weighting(name, t, task, **kw)(WeightContext(tl, label, task))
    assert w.shape == (b, t)
    assert torch.all(w >= 0)
    assert torch.allclose(w.sum(1), torch.ones(b), atol=1e-6)


def test_best_and_confidence_prefer_the_right_teacher():
    y = torch.tensor([1.0, 0.0])
    tl = torch.tensor([[3.0, -3.0], [3.0, -3.0]])  # teacher 0 right on row 0, teacher 1 right on row 1
    ctx = WeightContext(tl, y, "binary")
    assert build_weighting("best", 2, "binary")(ctx).argmax(1).tolist() == [0, 1]
    conf = build_weighting("confidence", 2, "binary")(ctx)
    assert conf[0, 0] > conf[0, 1] and conf[1, 1] > conf[1, 0]


def test_gate_downweights_a_noise_teacher():
    torch.manual_seed(0)
    n = 4000
    true_logit = torch.randn(n) * 2
    y = torch.bernoulli(torch.sigmoid(true_logit))
    tl = torch.stack([true_logit + 0.1 * torch.randn(n), torch.randn(n) * 2], 1)  # informative, noise
    gate = build_weighting("gate", 2, "binary")
    opt = torch.optim.Adam(gate.parameters(), 1e-2)
    for _ in range(300):
        idx = torch.randint(0, n, (256,))
        ctx = WeightContext(tl[idx], y[idx], "binary")
        loss = gate.aux_loss(ctx, gate(ctx))
        opt.zero_grad()
        loss.backward()
        opt.step()
    w = gate(WeightContext(tl, y, "binary")).mean(0)
    assert w[1] < 0.15 < 0.85 < w[0]


def _fit_gate(gate, tl, y, steps=300):
    opt = torch.optim.Adam(gate.parameters(), 1e-2)
    for _ in range(steps):
        idx = torch.randint(0, len(y), (256,))
        ctx = WeightContext(tl[idx], y[idx], "binary")
        loss = gate.aux_loss(ctx, gate(ctx))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return gate(WeightContext(tl, y, "binary")).mean(0)


def test_gate_fitted_on_held_out_rows_avoids_the_overfit_teacher():
    """Teacher 0 memorised the training labels (near-perfect there, noise elsewhere), teacher 1
    generalises. Fitted on training rows the gate trusts teacher 0; on held-out rows, teacher 1."""
    torch.manual_seed(0)
    n = 4000
    truth = torch.randn(2, n) * 2
    y = torch.bernoulli(torch.sigmoid(truth))
    memorised = (y[0] * 2 - 1) * 6  # train rows: the label itself
    train_tl = torch.stack([memorised, truth[0] + 0.5 * torch.randn(n)], 1)
    valid_tl = torch.stack([torch.randn(n) * 2, truth[1] + 0.5 * torch.randn(n)], 1)
    on_train = _fit_gate(build_weighting("gate", 2, "binary"), train_tl, y[0])
    on_valid = _fit_gate(build_weighting("gate", 2, "binary", fit_on="valid"), valid_tl, y[1])
    assert on_train[0] > 0.85 and on_valid[1] > 0.85
    with pytest.raises(ConfigError, match="fit_on"):
        build_weighting("gate", 2, "binary", fit_on="test")


def test_gate_entropy_bonus_keeps_weights_spread():
    torch.manual_seed(0)
    n = 4000
    true_logit = torch.randn(n) * 2
    y = torch.bernoulli(torch.sigmoid(true_logit))
    tl = torch.stack([true_logit + 0.1 * torch.randn(n), true_logit + 0.6 * torch.randn(n)], 1)
    plain = _fit_gate(build_weighting("gate", 2, "binary"), tl, y)
    torch.manual_seed(0)
    spread = _fit_gate(build_weighting("gate", 2, "binary", entropy=0.5), tl, y)
    assert spread[0] < plain[0] and spread.min() > 0.2


def test_mixture_shapes():
    w = torch.tensor([[0.25, 0.75]])
    assert mixture(w, torch.tensor([[4.0, 0.0]])).item() == pytest.approx(1.0)
    assert mixture(w, torch.ones(1, 2, 3)).shape == (1, 3)


# ---------------------------------------------------------------- with data and runs
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    write_synthetic(root / "s.csv", rows=3000, seed=5)
    schema = load_schema(REPO / "configs/datasets/synthetic.yaml")
    prepare(schema, root / "ds", root / "s.csv")
    base = ["params.embedding_dim=4", "params.hidden_units=[16]", "batch_size=256", "epochs=2", "device=cpu"]
    for name in ("deepfm", "dcn"):
        train_run(load_train_config(None, base, model=name), root / "ds", root / name, **QUIET)
    return root


def _student(world, **sets):
    base = ["params.embedding_dim=4", "params.hidden_units=[16]", "batch_size=256", "epochs=3", "device=cpu",
            f"distill.teachers={json.dumps([{'name': 'deepfm', 'run': str(world / 'deepfm')}, {'name': 'dcn', 'run': str(world / 'dcn')}])}"]
    return load_train_config(None, base + [f"{k}={json.dumps(v)}" for k, v in sets.items()], model="dnn")


def test_cache_is_reused_and_invalidated(world, tmp_path):
    ds = Dataset(world / "ds")
    spec = TeacherSpec("deepfm", run=str(world / "deepfm"))
    (d1,) = score_teachers(ds, [spec], log=lambda s: None)
    mtime = (d1 / "train_logits.npy").stat().st_mtime_ns
    (d1b,) = score_teachers(ds, [spec], log=lambda s: None)
    assert d1b == d1 and (d1 / "train_logits.npy").stat().st_mtime_ns == mtime  # reused
    logits = np.load(d1 / "valid_logits.npy")
    assert logits.shape == (ds.split("valid").rows,)
    # retraining the teacher changes its weights -> a new key, the stale cache is dropped
    import shutil

    shutil.copytree(world / "deepfm", tmp_path / "t")
    base = ["params.embedding_dim=4", "params.hidden_units=[16]", "batch_size=256", "epochs=1", "device=cpu", "seed=9"]
    train_run(load_train_config(None, base, model="deepfm"), world / "ds", tmp_path / "t", force=True, **QUIET)
    spec_t = TeacherSpec("retrained", run=str(tmp_path / "t"))
    (d2,) = score_teachers(ds, [spec_t], log=lambda s: None)
    train_run(load_train_config(None, base + ["seed=10"], model="deepfm"), world / "ds", tmp_path / "t",
              force=True, **QUIET)
    (d3,) = score_teachers(ds, [TeacherSpec("retrained", run=f"{tmp_path}/./t")], log=lambda s: None)
    assert d3 != d2 and not d2.exists()  # the same run, however its path is spelt
    # a changed dataset (other rows) has another checksum -> another key
    write_synthetic(tmp_path / "o.csv", rows=1500, seed=6)
    prepare(load_schema(REPO / "configs/datasets/synthetic.yaml"), tmp_path / "ds2", tmp_path / "o.csv")
    with pytest.raises(MtkdError, match="was trained on dataset"):
        score_teachers(Dataset(tmp_path / "ds2"), [spec], log=lambda s: None)
    with pytest.raises(MtkdError, match="run `mtkd score` first"):
        TeacherSet(Dataset(tmp_path / "ds2"), [TeacherSpec("x", score="nope")])


def test_offline_gate_distillation_logs_weights(world, tmp_path):
    s = train_run(_student(world, **{"distill.weighting": "gate"}), world / "ds", tmp_path / "g", **QUIET)
    lines = [json.loads(x) for x in (tmp_path / "g" / "metrics.jsonl").read_text().splitlines()]
    assert {"train.w.deepfm", "train.w.dcn", "valid.kd_loss", "valid.kd_loss_avg", "train.gate_loss"} <= set(lines[-1])
    assert lines[-1]["train.w.deepfm"] + lines[-1]["train.w.dcn"] == pytest.approx(1.0, abs=1e-5)
    assert 0.5 < s["test"]["auc"] <= 1


@pytest.mark.parametrize("weighting", ["single", "fixed", "learned", "confidence", "best", "random"])
def test_each_weighting_trains(world, tmp_path, weighting):
    sets = {"distill.weighting": weighting, "epochs": 1}
    if weighting == "single":
        sets["distill.weighting_params"] = {"teacher": "dcn"}
    s = train_run(_student(world, **sets), world / "ds", tmp_path / weighting, **QUIET)
    assert math.isfinite(s["valid"]["kd_loss"])
    assert ("kd_loss_avg" in s["valid"]) == (weighting == "learned")  # only a trainable weighting moves its target


@pytest.mark.parametrize("kd", ["bce", "kl"])  # binary kl crashed: at the first step with sum, at evaluation else
def test_sum_combine_and_hint(world, tmp_path, kd):
    s = train_run(_student(world, **{"distill.combine": "sum", "distill.hint": 0.1, "epochs": 1, "distill.kd_loss": kd}),
                  world / "ds", tmp_path / "h", **QUIET)
    assert math.isfinite(s["valid"]["kd_loss"]) and s["valid"]["kd_loss"] >= -1e-6


def test_early_stopping_on_kd_loss(world, tmp_path):
    c = _student(world, monitor="valid.kd_loss", patience=1, epochs=40, lr_patience=0,
                 **{"optimizer.lr": 0.05, "params.hidden_units": [64, 64]})
    s = train_run(c, world / "ds", tmp_path / "es", **QUIET)
    assert s["stopped_early"] and s["epochs_run"] < 40
    lines = [json.loads(x) for x in (tmp_path / "es" / "metrics.jsonl").read_text().splitlines()]
    best = min(lines, key=lambda d: d["valid.kd_loss"])
    assert best["epoch"] == s["best_epoch"] and s["valid"]["kd_loss"] == pytest.approx(best["valid.kd_loss"])


def test_cotraining_sends_no_kd_gradient_to_teachers(world):
    ds = Dataset(world / "ds")
    fmap = ds.feature_map
    torch.manual_seed(0)
    student = build_model("dnn", fmap, embedding_dim=4, hidden_units=[8])
    teachers = {"deepfm": build_model("deepfm", fmap, embedding_dim=4, hidden_units=[8])}
    obj = CoTraining("binary", teachers, build_weighting("average", 1, "binary"), student=student, alpha=0.0)
    from mtkd.data.loader import BatchLoader

    batch = next(iter(BatchLoader(ds, "train", 64)))
    out = student(batch)
    # the KD part alone (alpha=0): gradients must reach the student only
    _, logs, _ = obj.student_loss(student, batch, out, torch.stack([t(batch).logits for t in teachers.values()], 1).detach())
    kd = logs["kd_loss"]
    assert kd.requires_grad is False
    loss, _, _ = obj.student_loss(student, batch, out,
                                  torch.stack([t(batch).logits for t in teachers.values()], 1).detach())
    loss.backward()
    assert all(p.grad is None for p in teachers["deepfm"].parameters())
    assert any(p.grad is not None for p in student.parameters())
    # full co-training loss: teachers get gradients from their own cross-entropy only
    student.zero_grad()
    t_loss = obj.loss(student, batch, student(batch))[0]
    t_loss.backward()
    g_full = [p.grad.clone() for p in teachers["deepfm"].parameters()]
    for p in teachers["deepfm"].parameters():
        p.grad = None
    _, ce_only = obj._teacher_logits(batch)
    ce_only.backward()
    for a, p in zip(g_full, teachers["deepfm"].parameters()):
        assert torch.allclose(a, p.grad, atol=1e-7)


def test_cotraining_run_with_shared_embedding(world, tmp_path):
    teachers = [{"name": "deepfm", "model": "deepfm", "params": {"embedding_dim": 4, "hidden_units": [16]}},
                {"name": "dcn", "model": "dcn", "params": {"embedding_dim": 4, "hidden_units": [16]}}]
    c = load_train_config(None, ["params.embedding_dim=4", "params.hidden_units=[16]", "batch_size=256",
                                 "epochs=2", "device=cpu", f"distill.teachers={json.dumps(teachers)}",
                                 "distill.mode=cotrain", "distill.share_embedding=true",
                                 "distill.weighting=gate"], model="dnn")
    s = train_run(c, world / "ds", tmp_path / "co", **QUIET)
    assert "teacher.deepfm.auc" in s["valid"] and s["valid"]["teacher.dcn.auc"] > 0.5


def test_shared_embedding_keeps_the_teachers_first_order_weights(world):
    """A DeepFM teacher sharing a DNN student's embedding reads the student's field vectors and
    learns first-order weights of its own (the student's table has no columns for them)."""
    fmap = Dataset(world / "ds").feature_map
    student = build_model("dnn", fmap, embedding_dim=4, hidden_units=[8])
    teacher = build_model("deepfm", fmap, embedding_dim=4, hidden_units=[8])
    co = CoTraining("binary", {"deepfm": teacher}, build_weighting("average", 1, "binary"), student=student,
                    share_embedding=True)
    emb = co.teacher_models["deepfm"].embedding
    assert emb.shared is student.embedding and emb.first.table.weight.shape[1] == 1
    from mtkd.data.loader import BatchLoader

    batch = next(iter(BatchLoader(Dataset(world / "ds"), "train", batch_size=64, seed=0)))
    out = teacher(batch)
    out.logits.sum().backward()
    assert student.embedding.table.weight.grad is not None and emb.first.table.weight.grad is not None
    with pytest.raises(ValueError, match="numeric_input"):
        CoTraining("binary", {"d": build_model("deepfm", fmap, embedding_dim=4, numeric_input="dense")},
                   build_weighting("average", 1, "binary"), student=build_model("dnn", fmap, embedding_dim=4),
                   share_embedding=True)


def test_valid_rows_train_and_holdout_kd_stopping(world, tmp_path):
    c = _student(world, monitor="valid.kd_loss", epochs=2,
                 **{"distill.weighting": "gate", "distill.valid_holdout": 0.25})
    s = train_run(c, world / "ds", tmp_path / "vh", **QUIET)
    ds = Dataset(world / "ds")
    lines = [json.loads(x) for x in (tmp_path / "vh" / "metrics.jsonl").read_text().splitlines()]
    assert "valid.kd_loss" in lines[0]
    # the held-out slice is about a quarter of valid; the rest joined the training rows
    from mtkd.data.merged import MergedDataset

    m = MergedDataset(ds, 0.25, seed=c.seed)
    assert m.split("train").rows + m.split("valid").rows == ds.split("train").rows + ds.split("valid").rows
    assert 0.15 < m.split("valid").rows / ds.split("valid").rows < 0.35
    assert s["test"]["auc"] > 0.5
    from mtkd.errors import ConfigError

    with pytest.raises(ConfigError, match="monitor: valid.kd_loss"):
        _student(world, **{"distill.valid_holdout": 0.25})


def test_gate_fit_on_valid_trains_repeatably(world, tmp_path):
    sets = {"distill.weighting": "gate", "distill.weighting_params": {"fit_on": "valid"}, "epochs": 2}
    a = train_run(_student(world, **sets), world / "ds", tmp_path / "a", **QUIET)
    b = train_run(_student(world, **sets), world / "ds", tmp_path / "b", **QUIET)
    assert a["test"] == b["test"]
    on_train = train_run(_student(world, **{**sets, "distill.weighting_params": {}}), world / "ds",
                         tmp_path / "t", **QUIET)
    la = json.loads((tmp_path / "a" / "metrics.jsonl").read_text().splitlines()[-1])
    lt = json.loads((tmp_path / "t" / "metrics.jsonl").read_text().splitlines()[-1])
    assert "train.gate_loss" in la and la["train.w.dcn"] != lt["train.w.dcn"]  # the gate saw other rows
    assert math.isfinite(on_train["valid"]["kd_loss"])
    bad = _student(world, **{"distill.mode": "cotrain", "distill.weighting": "gate",
                             "distill.weighting_params": {"fit_on": "valid"},
                             "distill.teachers": [{"name": "fm", "model": "fm"}]})
    with pytest.raises(ConfigError, match="fit_on: valid is for offline"):
        train_run(bad, world / "ds", tmp_path / "c", **QUIET)


def test_caches_of_other_runs_with_the_same_name_survive(world, tmp_path):
    """Seeds of an experiment share teacher names; scoring one must not drop another's cache."""
    import shutil

    ds = Dataset(world / "ds")
    shutil.copytree(world / "dcn", tmp_path / "dcn_other")
    base = ["params.embedding_dim=4", "params.hidden_units=[16]", "batch_size=256", "epochs=1", "device=cpu", "seed=3"]
    train_run(load_train_config(None, base, model="dcn"), world / "ds", tmp_path / "dcn_other", force=True, **QUIET)
    (a,) = score_teachers(ds, [TeacherSpec("dcn", run=str(world / "dcn"))], log=lambda s: None)
    (b,) = score_teachers(ds, [TeacherSpec("dcn", run=str(tmp_path / "dcn_other"))], log=lambda s: None)
    assert a != b and (a / "meta.json").exists() and (b / "meta.json").exists()
    shutil.rmtree(b)


def test_a_logits_request_reads_the_cache_with_hidden_vectors(world, tmp_path):
    """Scoring for a policy student (logits + hidden codes) also serves a student that reads only
    logits, with the same numbers; not the other way round, and not after the teacher is retrained."""
    import shutil

    from mtkd.distill.teachers import predict_split
    from mtkd.train.run import load_run

    ds = Dataset(world / "ds")
    shutil.copytree(world / "deepfm", tmp_path / "t")
    spec = TeacherSpec("hid", run=str(tmp_path / "t"))
    logs: list[str] = []
    (coded,) = score_teachers(ds, [spec], with_hidden=True, hidden_code=4, log=logs.append)
    (plain,) = score_teachers(ds, [spec], log=logs.append)
    assert plain == coded and logs[-1].startswith("teacher hid: cached")
    ts = TeacherSet(ds, [spec])
    assert ts.dirs == [coded] and ts.hidden("train") is None
    np.testing.assert_array_equal(ts.logits("valid")[:, 0], predict_split(load_run(tmp_path / "t")[2], ds, "valid")[0])
    (raw,) = score_teachers(ds, [spec], with_hidden=True, log=logs.append)  # raw vectors: not in the coded cache
    assert raw != coded and np.load(raw / "train_hidden.npy").shape[1] > 4
    base = ["params.embedding_dim=4", "params.hidden_units=[16]", "batch_size=256", "epochs=1", "device=cpu", "seed=4"]
    train_run(load_train_config(None, base, model="deepfm"), world / "ds", tmp_path / "t", force=True, **QUIET)
    (fresh,) = score_teachers(ds, [spec], log=logs.append)
    assert fresh not in (coded, raw) and logs[-1].startswith("teacher hid: scored")
    for d in (coded, raw, fresh):
        shutil.rmtree(d, ignore_errors=True)


def test_stop_on_kd_loss_against_the_plain_average(world, tmp_path):
    c = _student(world, monitor="valid.kd_loss_avg", epochs=2, **{"distill.weighting": "gate"})
    s = train_run(c, world / "ds", tmp_path / "ka", **QUIET)
    lines = [json.loads(x) for x in (tmp_path / "ka" / "metrics.jsonl").read_text().splitlines()]
    best = min(lines, key=lambda d: d["valid.kd_loss_avg"])
    assert s["best_epoch"] == best["epoch"]


@pytest.mark.parametrize("numeric_input", ["embed", "dense"])
def test_gate_on_student_features_with_either_numeric_layout(world, tmp_path, numeric_input):
    """`use_features` feeds the student's DNN input (dense numerics included) to the gate."""
    c = _student(world, epochs=1, **{"params.numeric_input": numeric_input, "distill.weighting": "gate",
                                     "distill.weighting_params": {"use_features": True}})
    s = train_run(c, world / "ds", tmp_path / numeric_input, **QUIET)
    assert np.isfinite(s["test"]["logloss"])
    gate = torch.load(tmp_path / numeric_input / "best.pt", weights_only=False)["objective"]["module0"]
    fmap = Dataset(world / "ds").feature_map
    flat = build_model("dnn", fmap, embedding_dim=4, numeric_input=numeric_input).embedding.flat_dim
    assert gate["net.0.weight"].shape[1] == flat + 2 * 2  # the student's features + logit and probability per teacher


def test_distill_config_mistakes_are_refused_before_anything_is_written(world, tmp_path, run_cli):
    """A misspelt weighting parameter (the constructors take **kw) or weighting, `single` among
    several teachers without naming one, an unfinished teacher: each is refused by name, and the
    student's directory is not left behind to demand --resume on the corrected command."""
    import shutil

    base = ["distill", "--data", world / "ds", "-t", world / "deepfm", "-t", world / "dcn", "--quiet",
            "--set", "params.embedding_dim=4", "--set", "params.hidden_units=[16]", "--set", "epochs=1"]
    cases = [(["--weighting", "gate", "--set", "distill.weighting_params.entropyy=0.1"],
              "weighting 'gate' takes no parameter(s) 'entropyy'; it takes: entropy, fit_on, hidden, use_features"),
             (["--weighting", "average", "--set", "distill.weighting_params.hidden=8"], "it takes: none"),
             (["--weighting", "averge"], "unknown weighting 'averge'"),
             (["--weighting", "single"], "name it with distill.weighting_params.teacher"),
             (["--weighting", "single", "--set", "distill.weighting_params.teacher=dnc"], "no teacher named 'dnc'"),
             (["--weighting", "policy", "--set", "distill.weighting_params.baseline_momentum=5"],
              "weighting_params.baseline_momentum = 5: Input should be less than 1"),
             (["--weighting", "policy", "--set", "distill.weighting_params.hidden_proj=abc"],
              "weighting_params.hidden_proj = 'abc': Input should be a valid integer"),
             (["--weighting", "gate", "--set", "distill.weighting_params.hidden=0"],
              "weighting_params.hidden = 0: Input should be greater than or equal to 1"),
             (["--set", "distill.kd_loss=mse", "--set", "distill.temperature=2"], "a temperature does not apply"),
             (["--weighting", "gate", "--set", "distill.weighting_params.fit_on=valid", "--set",
               "distill.valid_holdout=0.2", "--set", "monitor=valid.kd_loss"], "use one of the two")]
    for args, needle in cases:
        rc, _, err = run_cli(*base, *args, "--out", tmp_path / "s")
        assert rc == 2 and needle in err, err
        assert not (tmp_path / "s").exists()
    rc, _, err = run_cli(*base, "--weighting", "single", "--set", "distill.weighting_params.teacher=dcn",
                         "--out", tmp_path / "s")
    assert rc == 0, err
    shutil.copytree(world / "dcn", tmp_path / "cut")
    (tmp_path / "cut" / "summary.json").unlink()  # as a teacher run killed after an epoch
    rc, _, err = run_cli("distill", "--data", world / "ds", "-t", tmp_path / "cut", "--quiet", "--out", tmp_path / "u")
    assert rc == 2 and "has not finished (no summary.json)" in err and "--resume" in err, err
    assert not (tmp_path / "u").exists()
    rc, out, _ = run_cli("distill", "--help")
    assert all(name in " ".join(out.split()) for name in WEIGHTINGS)  # the help names every weighting


def test_resume_is_refused_after_a_teacher_was_retrained_in_place(world, tmp_path):
    """The teacher's path is the same, its weights are not: a resumed student would have
    learned its first epochs from one model and the rest from another."""
    import shutil

    teacher = tmp_path / "teacher"
    shutil.copytree(world / "dcn", teacher)
    base = ["params.embedding_dim=4", "params.hidden_units=[16]", "batch_size=256", "epochs=1", "device=cpu"]
    student = load_train_config(None, base + [f"distill.teachers={json.dumps([{'name': 't', 'run': str(teacher)}])}"],
                                model="dnn")
    train_run(student, world / "ds", tmp_path / "s", **QUIET)
    saved = yaml.safe_load((tmp_path / "s" / "config.yaml").read_text())
    assert saved["teachers"]["t"].startswith("run:")
    assert train_run(student, world / "ds", tmp_path / "s", resume=True, **QUIET)  # unchanged: resumes
    train_run(load_train_config(None, base + ["seed=9"], model="dcn"), world / "ds", teacher, force=True, **QUIET)
    with pytest.raises(MtkdError, match=r"different configuration \(teacher t \(retrained\)\)"):
        train_run(student, world / "ds", tmp_path / "s", resume=True, **QUIET)
    del saved["teachers"]  # a run saved before teachers were recorded still resumes
    (tmp_path / "s" / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    assert train_run(student, world / "ds", tmp_path / "s", resume=True, **QUIET)


def test_score_column_teachers_as_probability_or_logit(tmp_path, run_cli):
    """A teacher trained elsewhere joins as a column of the data: `-t score:COL` reads a
    probability, `-t score:COL:logit` a logit; the same model either way gives the same cache."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from mtkd.cli import _teacher_refs

    write_synthetic(tmp_path / "s.csv", rows=2000, seed=4, with_truth=True)
    table = pacsv.read_csv(tmp_path / "s.csv")
    p = np.clip(table.column("p_true").to_numpy(), 1e-6, 1 - 1e-6)
    pacsv.write_csv(table.append_column("z_true", pa.array(np.log(p / (1 - p)))), tmp_path / "s.csv")
    schema = yaml.safe_load((REPO / "configs/datasets/synthetic.yaml").read_text())
    (tmp_path / "schema.yaml").write_text(yaml.safe_dump({**schema, "scores": ["p_true", "z_true"]}))
    prepare(load_schema(tmp_path / "schema.yaml"), tmp_path / "ds", tmp_path / "s.csv")
    refs = _teacher_refs(["score:p_true", "z=score:z_true:logit"])
    assert refs == [{"name": "p_true", "score": "p_true", "kind": "probability"},
                    {"name": "z", "score": "z_true", "kind": "logit"}]
    ds = Dataset(tmp_path / "ds")
    caches = score_teachers(ds, [TeacherSpec(r["name"], score=r["score"], kind=r["kind"]) for r in refs],
                            log=lambda s: None)
    for split in ("train", "valid", "test"):
        a, b = (np.load(c / f"{split}_logits.npy") for c in caches)
        np.testing.assert_allclose(a, b, atol=1e-3)
    rc, _, err = run_cli("distill", "--data", tmp_path / "ds", "-t", "z=score:z_true:logit", "--quiet", "--set",
                         "params.embedding_dim=4", "--set", "params.hidden_units=[16]", "--set", "epochs=1",
                         "--out", tmp_path / "student")
    assert rc == 0, err
    assert json.loads((tmp_path / "student" / "summary.json").read_text())["valid"]["auc"] > 0.6
