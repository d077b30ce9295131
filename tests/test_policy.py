"""Reinforced teacher selection: state, REINFORCE direction, rewards, repeatability, save/reload."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtkd.config import load_train_config
from mtkd.data.prepare import prepare
from mtkd.data.schema import load_schema
from mtkd.data.synthetic import write_synthetic
from mtkd.distill.policy import Policy
from mtkd.distill.policy_state import reward_ce, reward_ce_kd, small_state
from mtkd.distill.weighting import WeightContext, build_weighting
from mtkd.train.checkpoint import load_checkpoint
from mtkd.train.run import train_run

REPO = Path(__file__).resolve().parents[1]
QUIET = dict(progress=False, log=lambda s: None)


def _ctx(b=8, t=2, task="binary", c=3, hidden=(5, 7)):
    g = torch.Generator().manual_seed(0)
    if task == "binary":
        tl, s, y = torch.randn(b, t, generator=g), torch.randn(b, generator=g), torch.randint(0, 2, (b,), generator=g).float()
    else:
        tl, s, y = torch.randn(b, t, c, generator=g), torch.randn(b, c, generator=g), torch.randint(0, c, (b,), generator=g)
    th = [torch.randn(b, h, generator=g) for h in hidden]
    return WeightContext(tl, y, task, student_logits=s, teacher_hidden=th)


@pytest.mark.parametrize("task,p", [("binary", 1), ("multiclass", 3)])
def test_state_vector_has_documented_shape(task, p):
    ctx = _ctx(task=task)
    raw = Policy(2, task, hidden_dims=[5, 7], num_classes=p, hidden_proj=0).states(ctx)
    assert raw.shape == (8, 2, 2 * p + 2 + 7) and torch.isfinite(raw).all()
    assert torch.all(raw[:, 0, 2 * p + 2 + 5 :] == 0)  # teacher 0's 5 hidden values, zero-padded to 7
    assert torch.allclose(raw[:, 1, 2 * p + 2 :], F.layer_norm(ctx.teacher_hidden[1], (7,)))
    assert Policy(2, task, hidden_dims=[5, 7], num_classes=p, hidden_proj=4).states(ctx).shape == (8, 2, 2 * p + 6)
    assert Policy(2, task, hidden_dims=[5, 7], num_classes=p, use_hidden=False).states(ctx).shape == (8, 2, 2 * p + 2)


def test_state_values_by_hand():
    ctx = WeightContext(torch.tensor([[0.0]]), torch.tensor([1.0]), "binary", student_logits=torch.tensor([0.0]))
    s = small_state(ctx)
    # p_t = 0.5, CE = log 2, KL(teacher||student) = 0 (same distribution), p_s = 0.5
    assert torch.allclose(s, torch.tensor([[[0.5, torch.log1p(torch.log(torch.tensor(2.0))), 0.0, 0.5]]]), atol=1e-6)


def test_binary_state_matches_the_probability_form():
    ctx = _ctx(b=64, t=3, hidden=(2, 2, 2))
    z, s, y = ctx.teacher_logits, ctx.student_logits.unsqueeze(1), ctx.label.unsqueeze(1)
    pt, ps = torch.sigmoid(z), torch.sigmoid(s)
    kl = pt * torch.log(pt / ps) + (1 - pt) * torch.log((1 - pt) / (1 - ps))
    ce = -(y * torch.log(pt) + (1 - y) * torch.log(1 - pt))
    want = torch.stack([pt, torch.log1p(ce), torch.log1p(kl), ps.expand_as(z)], -1)
    assert torch.allclose(small_state(ctx), want, atol=1e-5)


def test_hidden_projection_is_whitened_pca():
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(5000, 3, generator=g) @ torch.randn(3, 12, generator=g) * 3 + 1).numpy()
    pol = Policy(1, "binary", hidden_dims=[12], hidden_proj=3)
    pol.fit_projection([x])
    z = pol.encode_hidden_array(0, x, block=777)
    assert z.shape == (5000, 3)
    assert np.allclose(z.mean(0), 0, atol=1e-4) and np.allclose(np.cov(z.T), np.eye(3), atol=0.05)
    assert np.allclose(z[:10], pol.encode_hidden(0, torch.from_numpy(x[:10])).numpy(), atol=1e-5)


def test_rewards_by_hand():
    z, y = torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0])
    want = -torch.tensor([F.softplus(torch.tensor(0.0)).item() - 0.0, F.softplus(torch.tensor(2.0)).item()])
    assert torch.allclose(reward_ce(z, y, "binary"), want, atol=1e-6)
    tl = torch.tensor([[0.0, 0.0], [2.0, 2.0]])  # teachers agree with the student: KD = entropy of p
    p = torch.sigmoid(tl[:, 0])
    ent = -(p * torch.log(p) + (1 - p) * torch.log(1 - p))
    assert torch.allclose(reward_ce_kd(z, y, tl, "binary"), want - ent, atol=1e-5)
    zm = torch.tensor([[2.0, 0.0, 0.0]])
    assert reward_ce(zm, torch.tensor([0]), "multiclass").item() == pytest.approx(
        -(-torch.log_softmax(zm, 1)[0, 0]).item())


@pytest.mark.parametrize("action", ["bernoulli", "categorical"])
def test_reinforce_favours_the_informative_teacher(action):
    """Selecting teacher 0 (informative) earns reward 1, teacher 1 (noise) earns -1."""
    torch.manual_seed(0)
    ctx = _ctx(b=256, hidden=(5, 7))
    pol = Policy(2, "binary", hidden_dims=[5, 7], hidden_proj=0, action=action, lr=0.05, warmup_epochs=0)
    pol.train()

    def probs():
        sc = pol.scores(pol.states(ctx))
        return torch.sigmoid(sc).mean(0) if action == "bernoulli" else torch.softmax(sc, 1).mean(0)

    before = probs().detach()
    for _ in range(60):
        pol(ctx)
        a = pol._last["actions"]
        pol.reinforce(pol._last["states"], a, a[:, 0] - a[:, 1])
    after = probs().detach()
    assert after[0] > before[0] + 0.2 and after[1] < before[1] - 0.2


@pytest.mark.parametrize("hidden", [0, 6])
@pytest.mark.parametrize("entropy", [0.0, 0.3])
@pytest.mark.parametrize("action", ["bernoulli", "categorical"])
def test_closed_form_policy_gradient_equals_autograd(action, entropy, hidden):
    """reinforce's gradient (closed form in the scores) is autograd's of -mean(A log pi) - c mean(H)."""
    torch.manual_seed(0)
    ctx = _ctx(b=64, t=3, hidden=(5, 7, 4))
    pol = Policy(3, "binary", hidden_dims=[5, 7, 4], hidden_proj=0, action=action, entropy=entropy,
                 hidden=hidden, warmup_epochs=0)
    pol.train()
    pol(ctx)
    states, actions = pol._last["states"], pol._last["actions"]
    rewards = torch.randn(64)
    pol.baseline = 0.3
    ref = {k: v.detach().clone() for k, v in pol.heads.named_parameters()}
    logp, ent = pol.log_prob(pol.scores(states), actions)
    loss = -((rewards - 0.3) * logp).mean() - entropy * ent.mean()
    grads = torch.autograd.grad(loss, list(pol.heads.parameters()))
    pol.opt = torch.optim.SGD(pol.heads.parameters(), lr=1.0)  # one plain step: params move by -grad
    pol.reinforce(states, actions, rewards)
    for (k, p), g in zip(pol.heads.named_parameters(), grads):
        torch.testing.assert_close(ref[k] - p.detach(), g, rtol=1e-4, atol=1e-6)


def test_no_gradient_into_teachers_or_policy_from_student_loss():
    ctx = _ctx()
    ctx.teacher_logits.requires_grad_(False)
    pol = Policy(2, "binary", hidden_dims=[5, 7], warmup_epochs=0)
    w = pol(ctx)
    assert not w.requires_grad  # the student's KD loss cannot push gradients into the policy
    assert not pol._last["states"].requires_grad


def test_policy_weights_rows():
    pol = Policy(3, "binary", hidden_dims=[5, 7, 0], warmup_epochs=0)
    ctx = _ctx(t=3, hidden=(5, 7, 0))
    ctx.teacher_hidden = [ctx.teacher_hidden[0], ctx.teacher_hidden[1], None]
    w = pol(ctx)
    sums = w.sum(1)
    assert torch.all(((sums - 1).abs() < 1e-6) | (sums == 0))  # a selection, or none (label only)
    pol.eval()
    w = pol(ctx)
    assert torch.allclose(w.sum(1), torch.ones(8))
    pol.epoch, pol.warmup_epochs = 0, 1
    assert torch.allclose(pol(ctx), torch.full((8, 3), 1 / 3))  # warm-up: average


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("policy")
    write_synthetic(root / "s.csv", rows=2500, seed=8)
    prepare(load_schema(REPO / "configs/datasets/synthetic.yaml"), root / "ds", root / "s.csv")
    base = ["params.embedding_dim=4", "params.hidden_units=[16]", "batch_size=256", "epochs=2", "device=cpu"]
    train_run(load_train_config(None, base, model="deepfm"), root / "ds", root / "deepfm", **QUIET)
    lr_base = ["batch_size=256", "epochs=2", "device=cpu"]  # a deliberately poor teacher
    train_run(load_train_config(None, lr_base, model="lr"), root / "ds", root / "lr", **QUIET)
    return root


def _cfg(world, **sets):
    teachers = [{"name": "deepfm", "run": str(world / "deepfm")}, {"name": "lr", "run": str(world / "lr")}]
    base = ["params.embedding_dim=4", "params.hidden_units=[16]", "batch_size=256", "epochs=3", "device=cpu",
            f"distill.teachers={json.dumps(teachers)}", "distill.weighting=policy"]
    return load_train_config(None, base + [f"{k}={json.dumps(v)}" for k, v in sets.items()], model="dnn")


@pytest.mark.parametrize("reward", ["ce", "ce_kd", "valid"])
def test_policy_runs_with_each_reward_and_logs_selection(world, tmp_path, reward):
    c = _cfg(world, **{"distill.weighting_params": {"reward": reward, "warmup_epochs": 1, "episode_steps": 3}})
    train_run(c, world / "ds", tmp_path / reward, **QUIET)
    last = json.loads((tmp_path / reward / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0 <= last["train.sel.deepfm"] <= 1 and 0 <= last["train.sel.lr"] <= 1
    assert "train.reward" in last


def test_encoded_hidden_in_the_loader_equals_encoding_per_batch(world, tmp_path):
    from mtkd.data.loader import BatchLoader
    from mtkd.data.store import Dataset
    from mtkd.distill.build import build_objective
    from mtkd.models import build_model

    ds = Dataset(world / "ds")
    c = _cfg(world, **{"distill.weighting_params": {"warmup_epochs": 0, "hidden_proj": 4}})
    obj = build_objective(c, ds, build_model("dnn", ds.feature_map, embedding_dim=4, hidden_units=[16]),
                          log=lambda s: None)
    pol = obj.weighting
    assert obj.hidden_encoded and pol.hidden_coded and pol.enc_dims == [4, 4]
    enc = next(iter(BatchLoader(ds, "train", 64, shuffle=False, **obj.loader_extra("train"))))
    raw = next(iter(BatchLoader(ds, "train", 64, shuffle=False, teacher_logits=obj.teachers.logits("train"),
                                teacher_hidden=obj.teachers.hidden("train"))))
    s = torch.zeros(64)
    a = pol.states(WeightContext(enc.teacher_logits, enc.label, "binary", s, teacher_hidden=enc.teacher_hidden,
                                 hidden_encoded=True))
    b = pol.states(WeightContext(raw.teacher_logits, raw.label, "binary", s, teacher_hidden=raw.teacher_hidden))
    assert torch.allclose(a, b, atol=1e-5)
    # the encoded state is a memory-mapped file beside the teacher cache, shared by every seed
    files = sorted(obj.teachers.dirs[0].glob("policy_state-*-train.npy"))  # other tests' keys may be there too
    assert isinstance(obj._encoded["train"][0], np.memmap) and Path(obj._encoded["train"][0].filename) in files
    c2 = _cfg(world, **{"distill.weighting_params": {"warmup_epochs": 0, "hidden_proj": 4}, "seed": 7})
    obj2 = build_objective(c2, ds, build_model("dnn", ds.feature_map, embedding_dim=4, hidden_units=[16]),
                           log=lambda s: None)
    np.testing.assert_array_equal(obj2.loader_extra("train")["teacher_hidden"][0], obj._encoded["train"][0])
    assert sorted(obj.teachers.dirs[0].glob("policy_state-*-train.npy")) == files
    assert not list(obj.teachers.dirs[0].glob(".policy_state*"))  # no temporary file left


def test_teacher_cache_holds_hidden_codes_and_they_equal_the_policys_own_encoding(world):
    """Without a hint loss the teachers' cache keeps each row's K-float code of the hidden
    vector (fitted on a fixed training sample while scoring), never the vector. With a hint loss
    the raw vectors are cached and the policy fits the same code itself: both give one state."""
    from mtkd.data.loader import BatchLoader
    from mtkd.data.store import Dataset
    from mtkd.distill.build import build_objective
    from mtkd.models import build_model

    ds = Dataset(world / "ds")

    def objective(**extra):
        c = _cfg(world, **{"distill.weighting_params": {"warmup_epochs": 0, "hidden_proj": 3}, **extra})
        return build_objective(c, ds, build_model("dnn", ds.feature_map, embedding_dim=4, hidden_units=[16]),
                               log=lambda s: None)

    coded, hinted = objective(), objective(**{"distill.hint": 0.5})
    for d in coded.teachers.dirs:
        assert (d / "hidden_code.npz").exists() and json.loads((d / "meta.json").read_text())["hidden_code"] == 3
        assert np.load(d / "train_hidden.npy", mmap_mode="r").shape == (ds.split("train").rows, 3)
    raw_widths = [np.load(d / "train_hidden.npy", mmap_mode="r").shape[1] for d in hinted.teachers.dirs]
    assert min(raw_widths) > 3 and not hinted.weighting.hidden_coded
    s = torch.zeros(128)
    states = []
    for obj in (coded, hinted):
        b = next(iter(BatchLoader(ds, "valid", 128, shuffle=False, teacher_logits=obj.teachers.logits("valid"),
                                  teacher_hidden=obj.teachers.hidden("valid"))))
        states.append(obj.weighting.states(WeightContext(b.teacher_logits, b.label, "binary", s,
                                                         teacher_hidden=b.teacher_hidden)))
    assert states[0].shape == states[1].shape == (128, 2, 4 + 3)
    torch.testing.assert_close(states[0], states[1], atol=1e-4, rtol=1e-4)


def test_encoded_state_falls_back_to_memory_when_the_cache_cannot_be_written(world, monkeypatch):
    from mtkd.data.store import Dataset
    from mtkd.distill.build import build_objective
    from mtkd.models import build_model

    ds = Dataset(world / "ds")
    c = _cfg(world, **{"distill.weighting_params": {"warmup_epochs": 0, "hidden_proj": 3}})
    obj = build_objective(c, ds, build_model("dnn", ds.feature_map, embedding_dim=4, hidden_units=[16]),
                          log=lambda s: None)

    real = np.lib.format.open_memmap

    def full_disk(*a, **k):  # reading works, writing a new file does not
        if k.get("mode") == "w+":
            raise OSError(28, "No space left on device")
        return real(*a, **k)

    monkeypatch.setattr(np.lib.format, "open_memmap", full_disk)
    enc = obj.loader_extra("valid")["teacher_hidden"][0]
    assert not isinstance(enc, np.memmap) and enc.shape[1:] == (2, 3)
    assert not list(obj.teachers.dirs[0].glob(f"*policy_state-{obj.weighting.state_key()}-valid*"))


def test_reward_on_a_sample_of_the_batch(world, tmp_path):
    c = _cfg(world, **{"distill.weighting_params": {"warmup_epochs": 0, "reward_sample": 0.25}, "epochs": 1})
    train_run(c, world / "ds", tmp_path / "rs", **QUIET)
    last = json.loads((tmp_path / "rs" / "metrics.jsonl").read_text().splitlines()[-1])
    assert "train.reward" in last and 0 <= last["train.sel.deepfm"] <= 1
    from mtkd.errors import ConfigError

    with pytest.raises(ConfigError, match="reward_sample = 0: Input should be greater than 0"):
        build_weighting("policy", 2, "binary", reward_sample=0)  # the bounds in its signature


def test_same_seed_repeats_and_policy_is_saved(world, tmp_path):
    c = _cfg(world, **{"distill.weighting_params": {"warmup_epochs": 1, "hidden": 8}})
    a = train_run(c, world / "ds", tmp_path / "a", **QUIET)
    b = train_run(c, world / "ds", tmp_path / "b", **QUIET)
    assert a["valid"] == b["valid"]
    la = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    lb = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    strip = lambda ls: [{k: v for k, v in json.loads(x).items() if "seconds" not in k and "per_s" not in k} for x in ls]
    assert strip(la) == strip(lb)
    ck = load_checkpoint(tmp_path / "a" / "best.pt")
    pol_state = ck["objective"]["module0"]
    assert any(k.startswith("heads.") for k in pol_state) and "_extra_state" in pol_state
    # reload into a fresh policy: same scores
    from mtkd.distill.build import build_objective
    from mtkd.data.store import Dataset
    from mtkd.models import build_model

    ds = Dataset(world / "ds")
    obj = build_objective(c, ds, build_model("dnn", ds.feature_map, embedding_dim=4, hidden_units=[16]), log=lambda s: None)
    obj.load_state_dict(ck["objective"])
    assert obj.weighting.epoch == ck["objective"]["module0"]["_extra_state"]["epoch"]
    for k, v in obj.weighting.state_dict().items():
        if k != "_extra_state":
            assert torch.equal(v, pol_state[k])


@pytest.mark.parametrize("params", [{"warmup_epochs": 1},
                                    {"warmup_epochs": 0, "update_every": 3},  # rows pending at the cut
                                    {"warmup_epochs": 0, "reward": "valid", "episode_steps": 4}])
def test_policy_resume_equals_uninterrupted(world, tmp_path, params):
    c = _cfg(world, **{"distill.weighting_params": params})
    full = train_run(c, world / "ds", tmp_path / "full", **QUIET)
    import mtkd.train.trainer as tr

    orig = tr.Trainer._save_last
    calls = {"n": 0}

    def save_then_die(self):
        orig(self)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    tr.Trainer._save_last = save_then_die
    try:
        with pytest.raises(KeyboardInterrupt):
            train_run(c, world / "ds", tmp_path / "cut", **QUIET)
    finally:
        tr.Trainer._save_last = orig
    resumed = train_run(c, world / "ds", tmp_path / "cut", resume=True, **QUIET)
    assert resumed["valid"] == full["valid"] and resumed["test"] == full["test"]


def test_lr_ensemble_learns_to_trust_the_informative_teacher():
    torch.manual_seed(0)
    n = 4000
    true = torch.randn(n) * 2
    y = torch.bernoulli(torch.sigmoid(true))
    tl = torch.stack([true, torch.randn(n) * 2], 1)
    w = build_weighting("lr_ensemble", 2, "binary")
    opt = torch.optim.Adam(w.parameters(), 0.05)
    for _ in range(200):
        ctx = WeightContext(tl, y, "binary")
        loss = w.aux_loss(ctx, w(ctx))
        opt.zero_grad()
        loss.backward()
        opt.step()
    weights = w(WeightContext(tl, y, "binary"))[0]
    assert weights[0] > 0.8


def test_same_seed_same_result_whether_or_not_teachers_are_cached(world, tmp_path):
    """Scoring teachers builds models (random inits): it must not shift the student's random stream."""
    import shutil

    c = _cfg(world, **{"distill.weighting_params": {"warmup_epochs": 0}, "epochs": 1})
    cached = train_run(c, world / "ds", tmp_path / "cached", **QUIET)
    shutil.rmtree(world / "ds" / "teachers")
    scored = train_run(c, world / "ds", tmp_path / "scored", **QUIET)
    assert scored["test"] == cached["test"]


def test_mtkd_score_with_hidden_code_writes_the_cache_the_policy_reads(world, capsys):
    from mtkd.cli import main
    from mtkd.data.store import Dataset
    from mtkd.distill.build import build_objective
    from mtkd.models import build_model

    teachers = ["-t", f"deepfm={world / 'deepfm'}", "-t", f"lr={world / 'lr'}"]
    assert main(["score", "--data", str(world / "ds"), *teachers, "--hidden", "--hidden-code", "16"]) == 0
    printed = "".join(capsys.readouterr().out.split())  # the cache dirs (rich may wrap long paths)
    ds = Dataset(world / "ds")
    obj = build_objective(_cfg(world), ds, build_model("dnn", ds.feature_map, embedding_dim=4, hidden_units=[16]),
                          log=lambda s: None)
    assert printed == "".join(str(d) for d in obj.teachers.dirs)
    assert main(["score", "--data", str(world / "ds"), *teachers, "--hidden-code", "16"]) != 0  # needs --hidden


def test_bf16_reward_is_not_rounding(world, tmp_path):
    """Under `amp: bf16` the reward's "after" forward ran in fp32 and its "before" (the training
    forward) in bf16: with a student that does not move (lr 1e-9) the reward was their rounding
    gap, ~5e-4 a row, as large as a real step's effect. Both now run as the trainer runs."""
    c = _cfg(world, **{"distill.weighting_params": {"warmup_epochs": 0}, "epochs": 1, "amp": "bf16",
                       "optimizer.lr": 1e-9})
    train_run(c, world / "ds", tmp_path / "bf16", **QUIET)
    last = json.loads((tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines()[-1])
    assert abs(last["train.reward"]) < 1e-6


def test_ce_kd_reward_uses_the_runs_kd_loss_and_temperature(world):
    from mtkd.data.store import Dataset
    from mtkd.distill.build import build_objective
    from mtkd.models import build_model

    c = _cfg(world, **{"distill.weighting_params": {"reward": "ce_kd"}, "distill.temperature": 4.0,
                       "distill.kd_loss": "bce"})
    ds = Dataset(world / "ds")
    policy = build_objective(c, ds, build_model("dnn", ds.feature_map, embedding_dim=4), log=lambda s: None).weighting
    z, label, tl = torch.randn(6), torch.randint(0, 2, (6,)).float(), torch.randn(6, 2)
    assert torch.allclose(policy._reward(z, label, tl), reward_ce_kd(z, label, tl, "binary", 4.0, "bce"))
    assert not torch.allclose(policy._reward(z, label, tl), reward_ce_kd(z, label, tl, "binary", 1.0))


def test_resuming_an_earlier_ce_kd_checkpoint_warns_that_the_reward_changed():
    """An earlier mtkd rewarded ce_kd with the default loss at T = 1 whatever the run's settings; a
    checkpoint it wrote resumed here goes on with the run's own: said, since one run then has two."""
    import warnings

    p = build_weighting("policy", 2, "binary", reward="ce_kd", kd_temperature=3.0)
    state = p.get_extra_state()
    assert state["reward_kd"] == [None, 3.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p.set_extra_state(state)  # this version's own checkpoint: no word
    del state["reward_kd"]
    with pytest.warns(UserWarning, match="reward ce_kd used the default KD loss at temperature 1"):
        p.set_extra_state(state)
