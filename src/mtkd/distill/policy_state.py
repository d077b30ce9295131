"""The reinforced teacher selection's parts: the state it reads, its scoring heads, its rewards.

`policy.Policy` documents the state; these are its pure functions and its network.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtkd.distill.losses import default_kd_loss, kd_loss
from mtkd.distill.weighting import WeightContext, teacher_ce


def small_state(ctx: WeightContext) -> Tensor:
    """Items 1-4 of the state for every teacher: [B, T, 2P + 2]."""
    z = ctx.teacher_logits.float()
    s = ctx.student_logits.float()
    if ctx.task == "binary":  # in logit space: exact, stable, and half the ops of the probability form
        s1, p_t = s.unsqueeze(1), torch.sigmoid(z)
        kl = F.softplus(s1) - F.softplus(z) - p_t * (s1 - z)  # KL(Bern(sigmoid z) || Bern(sigmoid s))
        return torch.stack([p_t, torch.log1p(teacher_ce(ctx)), torch.log1p(kl.clamp_min(0)),
                            torch.sigmoid(s1).expand_as(z)], -1)
    log_t, log_s = F.log_softmax(z, -1), F.log_softmax(s, -1).unsqueeze(1)
    p_t, p_s = log_t.exp(), log_s.exp().expand_as(log_t)
    kl = (p_t * (log_t - log_s)).sum(-1, keepdim=True)
    ce = teacher_ce(ctx).unsqueeze(-1)
    return torch.cat([p_t, torch.log1p(ce), torch.log1p(kl.clamp_min(0)), p_s], -1)


def state_tensor(ctx: WeightContext, hidden: Sequence[Tensor | None], width: int) -> Tensor:
    """The documented state [B, T, 2P + 2 + width], from already encoded hidden vectors."""
    small = small_state(ctx)
    if width == 0:
        return small
    b, t = small.shape[:2]
    h = small.new_zeros(b, t, width)
    for i, x in enumerate(hidden):
        if x is not None:
            h[:, i, : x.shape[1]] = x.float()
    return torch.cat([small, h], -1)


def reward_ce(student_logits: Tensor, label: Tensor, task: str) -> Tensor:
    """-CE of the (updated) student per instance."""
    if task == "binary":
        return -F.binary_cross_entropy_with_logits(student_logits.float(), label.float(), reduction="none")
    return -F.cross_entropy(student_logits.float(), label.long(), reduction="none")


def reward_ce_kd(student_logits: Tensor, label: Tensor, teacher_logits: Tensor, task: str,
                 temperature: float = 1.0, loss: str | None = None) -> Tensor:
    """-(CE + KD to the average of all teachers) per instance; the KD term is the run's own
    (`distill.kd_loss` at `distill.temperature`), what the student learns by."""
    target = teacher_logits.float().mean(1)
    return reward_ce(student_logits, label, task) - kd_loss(loss or default_kd_loss(task), student_logits, target,
                                                            temperature)


class Heads(nn.Module):
    """One scoring head per teacher over its state [B, T, d] -> [B, T], batched with einsum."""

    def __init__(self, num_teachers: int, dim: int, hidden: int = 0):
        super().__init__()
        bound = 1.0 / math.sqrt(max(dim, 1))  # nn.Linear's default init
        self.hidden = hidden
        if hidden > 0:
            self.w1 = nn.Parameter(torch.empty(num_teachers, dim, hidden).uniform_(-bound, bound))
            self.b1 = nn.Parameter(torch.empty(num_teachers, hidden).uniform_(-bound, bound))
            b2 = 1.0 / math.sqrt(hidden)
            self.w2 = nn.Parameter(torch.empty(num_teachers, hidden).uniform_(-b2, b2))
            self.b2 = nn.Parameter(torch.empty(num_teachers).uniform_(-b2, b2))
        else:
            self.w = nn.Parameter(torch.empty(num_teachers, dim).uniform_(-bound, bound))
            self.b = nn.Parameter(torch.empty(num_teachers).uniform_(-bound, bound))

    def forward(self, state: Tensor) -> Tensor:
        if self.hidden > 0:
            h = torch.relu(torch.einsum("btd,tdh->bth", state, self.w1) + self.b1)
            return (h * self.w2).sum(-1) + self.b2
        return (state * self.w).sum(-1) + self.b
