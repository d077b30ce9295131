"""What a CUDA run does differently, checked on this CPU-only machine.

The `meta` device stands in for a GPU where it behaves like one: `torch.stack` refuses to mix its
tensors with host tensors, and reading a value (`float()`, `.item()`) fails, as a host sync would
cost a GPU step. Device choice under torchrun is checked with CUDA reported available.
"""

from __future__ import annotations

import pytest
import torch

from mtkd.distill.policy import Policy
from mtkd.distill.weighting import WeightContext, build_weighting
from mtkd.errors import MtkdError
from mtkd.train.device import resolve_device
from mtkd.train.running import RunningMeans

META = torch.device("meta")


def test_running_means_take_a_log_made_on_the_host():
    """The policy's `reward: valid` log was a host tensor beside device ones: the first episode's
    end crashed `torch.stack` on a GPU."""
    running = RunningMeans(META)
    running.add(torch.zeros((), device=META), {"sel_rate": torch.zeros((), device=META), "reward": torch.tensor(0.5)}, 4)
    assert running.seen == 4


def test_lr_ensemble_weights_need_no_host_sync():
    w = build_weighting("lr_ensemble", 2, "binary").to(META)
    out = w(WeightContext(torch.zeros(4, 2, device=META), torch.zeros(4, device=META), "binary"))
    assert out.shape == (4, 2) and out.device == META
    w = build_weighting("lr_ensemble", 2, "binary")
    ctx = WeightContext(torch.zeros(3, 2), torch.zeros(3), "binary")
    with torch.no_grad():
        w.coef.copy_(torch.tensor([1.0, 3.0]))
        torch.testing.assert_close(w(ctx)[0], torch.tensor([0.25, 0.75]))
        w.coef.copy_(torch.tensor([-1.0, -2.0]))  # no positive coefficient: the plain average
        torch.testing.assert_close(w(ctx)[0], torch.tensor([0.5, 0.5]))


def test_policy_reward_and_baseline_stay_on_the_device_until_checkpointed():
    pol = Policy(2, "binary", hidden_proj=0, use_hidden=False, warmup_epochs=0)
    states = torch.randn(8, 2, pol.heads.w.shape[1])
    actions = torch.bernoulli(torch.full((8, 2), 0.5))
    mean_r = pol.reinforce(states, actions, torch.arange(8.0))
    assert isinstance(mean_r, torch.Tensor) and mean_r.device == actions.device
    assert float(mean_r) == pytest.approx(3.5)
    pol.reinforce(states, actions, torch.zeros(8))
    saved = pol.get_extra_state()["baseline"]
    assert isinstance(saved, float) and saved == pytest.approx(0.9 * 3.5)


def test_torchrun_cuda_ranks_take_their_own_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("auto") == torch.device("cuda", 1)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(MtkdError, match="LOCAL_RANK is 1.*--device cuda"):
        resolve_device("cuda:0")  # every rank on GPU 0
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
