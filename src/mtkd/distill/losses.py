"""Knowledge-distillation losses between a student's and a teacher's outputs.

Binary tasks have one logit per row, multi-class tasks one per class; each loss takes
student logits [B] / [B, C] and teacher logits of the same shape, and returns the
per-row loss [B] so weightings can combine them per instance. Losses with a temperature
are scaled by T^2 so their gradients keep the same size as T changes (Hinton et al.).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

KD_LOSSES: dict[str, Callable[..., Tensor]] = {}


def register_kd_loss(name: str):
    def add(fn):
        KD_LOSSES[name] = fn
        return fn

    return add


@register_kd_loss("bce")
def soft_bce(student: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
    """Binary soft-label cross-entropy: BCE(sigmoid(z_s/T), sigmoid(z_t/T)) * T^2, per row."""
    t = temperature
    if t == 1.0:  # the common case: no scaling ops in the hot path
        return F.binary_cross_entropy_with_logits(student.float(), torch.sigmoid(teacher.float()), reduction="none")
    target = torch.sigmoid(teacher.float() / t)
    return F.binary_cross_entropy_with_logits(student.float() / t, target, reduction="none") * (t * t)


@register_kd_loss("kl")
def soft_kl(student: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
    """KL(softmax(z_t/T) || softmax(z_s/T)) * T^2, per row; for binary logits [B] the KL of the
    two Bernoulli distributions (soft BCE less the teacher's entropy: the same gradient, 0 at a
    match). A softmax over [B] would have run across the batch: one number, not a loss per row."""
    t = temperature
    if student.dim() == 1:
        target = torch.sigmoid(teacher.float() / t)
        entropy = F.binary_cross_entropy(target, target, reduction="none")
        return (F.binary_cross_entropy_with_logits(student.float() / t, target, reduction="none") - entropy) * (t * t)
    log_p_s = F.log_softmax(student.float() / t, dim=-1)
    log_p_t = F.log_softmax(teacher.float() / t, dim=-1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1) * (t * t)


@register_kd_loss("mse")
def logit_mse(student: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
    """Squared distance between logits (mean over classes for multi-class), per row. Logits
    are matched as they are: a temperature does not apply (refused with it in the config)."""
    d = (student.float() - teacher.float()) ** 2
    return d if d.dim() == 1 else d.mean(-1)


def default_kd_loss(task: str) -> str:
    return "bce" if task == "binary" else "kl"


def kd_loss(name: str, student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    if name not in KD_LOSSES:
        from mtkd.errors import ConfigError

        raise ConfigError(f"unknown KD loss {name!r}; known: {', '.join(sorted(KD_LOSSES))}")
    if name == "bce" and student.dim() != 1:
        name = "kl"  # soft BCE is the binary case of KL; multi-class logits need the softmax form
    return KD_LOSSES[name](student, teacher, temperature)


class HintRegression(nn.Module):
    """FitNets-style hint: a learned linear map from the student's hidden vector to a teacher's.

    Returns the per-row mean squared error; the teacher's hidden vector is a fixed target.
    """

    def __init__(self, student_dim: int, teacher_dim: int):
        super().__init__()
        self.proj = nn.Linear(student_dim, teacher_dim)

    def forward(self, student_hidden: Tensor, teacher_hidden: Tensor) -> Tensor:
        return ((self.proj(student_hidden.float()) - teacher_hidden.float().detach()) ** 2).mean(-1)
