"""Per-instance teacher weightings: each returns weights [B, T] whose rows sum to 1.

The weighting decides how much each teacher's soft label counts for each training
instance. Some are fixed rules (average, best, confidence), some are trained with the
student (learned, gate); the reinforced-selection policy is one more (see `policy.py`).
Trainable weightings learn from the label through `aux_loss` — the cross-entropy of the
weighted teacher mixture — never from the student's KD loss, which would pull them
towards whichever teacher the student already imitates.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Annotated, Any, Callable

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from mtkd.errors import ConfigError

# bounds of weighting parameters, in the constructors' signatures: checked when a config loads
# (`check_weighting`), so `baseline_momentum: 5` or a gate of width 0 never trains
Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Count = Annotated[int, Field(ge=0)]
AtLeastOne = Annotated[int, Field(ge=1)]

WEIGHTINGS: dict[str, type["Weighting"]] = {}


def register_weighting(name: str) -> Callable[[type], type]:
    def add(cls: type) -> type:
        WEIGHTINGS[name] = cls
        cls.weighting_name = name
        return cls

    return add


@dataclass
class WeightContext:
    """What a weighting may look at for one batch."""

    teacher_logits: Tensor  # [B, T] binary, [B, T, C] multi-class
    label: Tensor  # [B]
    task: str
    student_logits: Tensor | None = None  # detached
    features: Tensor | None = None  # [B, D] detached student-side input features (gate option)
    teacher_hidden: list[Tensor] | None = None
    hidden_encoded: bool = False  # teacher_hidden = [one [B, T, K] tensor] in the policy's encoding


def teacher_ce(ctx: WeightContext) -> Tensor:
    """Per-instance cross-entropy of each teacher against the label: [B, T]."""
    z = ctx.teacher_logits.float()
    if ctx.task == "binary":
        y = ctx.label.float().unsqueeze(1).expand_as(z)
        return F.binary_cross_entropy_with_logits(z, y, reduction="none")
    logp = F.log_softmax(z, dim=-1)  # [B, T, C]
    idx = ctx.label.long().view(-1, 1, 1).expand(-1, z.shape[1], 1)
    return -logp.gather(-1, idx).squeeze(-1)


def mixture(weights: Tensor, teacher_logits: Tensor) -> Tensor:
    """Weighted mixture of teacher logits ([B, T] -> [B], [B, T, C] -> [B, C]), as in the paper."""
    w = weights.to(teacher_logits.dtype)
    if teacher_logits.dim() == 2:
        return (w * teacher_logits).sum(1)
    return (w.unsqueeze(-1) * teacher_logits).sum(1)


def mixture_ce(ctx: WeightContext, weights: Tensor) -> Tensor:
    """Cross-entropy of the weighted teacher mixture against the label (trains gate/learned)."""
    z = mixture(weights, ctx.teacher_logits.float())
    if ctx.task == "binary":
        return F.binary_cross_entropy_with_logits(z, ctx.label.float())
    return F.cross_entropy(z, ctx.label.long())


class Weighting(nn.Module):
    """Base: `forward(ctx) -> [B, T]`; trainable ones override `aux_loss`."""

    weighting_name = ""

    def __init__(self, num_teachers: int, task: str = "binary", **_: Any):
        super().__init__()
        if num_teachers < 1:
            raise ConfigError("distillation needs at least one teacher")
        self.num_teachers = num_teachers
        self.task = task

    def forward(self, ctx: WeightContext) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def aux_loss(self, ctx: WeightContext, weights: Tensor) -> Tensor | None:
        return None


def _fit_on(value: str) -> str:
    if value not in ("train", "valid"):
        raise ConfigError(f"fit_on must be 'train' or 'valid', got {value!r}")
    return value


def _uniform(ctx: WeightContext, t: int) -> Tensor:
    b = ctx.teacher_logits.shape[0]
    return torch.full((b, t), 1.0 / t, device=ctx.teacher_logits.device)


@register_weighting("average")
class Average(Weighting):
    """U-Ensemble: every teacher counts the same."""

    def forward(self, ctx: WeightContext) -> Tensor:
        return _uniform(ctx, self.num_teachers)


@register_weighting("single")
class Single(Weighting):
    """One named teacher (by index; the objective resolves names)."""

    def __init__(self, num_teachers: int, task: str = "binary", teacher: int | str = 0, **kw: Any):
        super().__init__(num_teachers, task)
        if not 0 <= int(teacher) < num_teachers:
            raise ConfigError(f"single: teacher index {teacher} is not in [0, {num_teachers})")
        self.teacher = int(teacher)

    def forward(self, ctx: WeightContext) -> Tensor:
        w = torch.zeros(ctx.teacher_logits.shape[0], self.num_teachers, device=ctx.teacher_logits.device)
        w[:, self.teacher] = 1.0
        return w


@register_weighting("fixed")
class Fixed(Weighting):
    """W-Ensemble: given weights, or weights proportional to each teacher's validation score
    above chance (AUC - 0.5 for binary, accuracy for multi-class), normalised."""

    def __init__(self, num_teachers: int, task: str = "binary", weights: list[float] | None = None,
                 teacher_scores: list[float] | None = None, **kw: Any):
        super().__init__(num_teachers, task)
        if weights is None:
            if teacher_scores is None:
                raise ConfigError("fixed: give `weights`, or teacher validation scores to derive them")
            base = 0.5 if task == "binary" else 0.0
            weights = [max(s - base, 1e-6) for s in teacher_scores]
        if len(weights) != num_teachers or min(weights) < 0 or sum(weights) <= 0:
            raise ConfigError(f"fixed: weights {weights} must be {num_teachers} non-negative numbers")
        w = torch.tensor(weights, dtype=torch.float32)
        self.register_buffer("w", w / w.sum())

    def forward(self, ctx: WeightContext) -> Tensor:
        return self.w.to(ctx.teacher_logits.device).expand(ctx.teacher_logits.shape[0], -1)


@register_weighting("learned")
class Learned(Weighting):
    """One global softmax vector over teachers, trained jointly by the mixture's cross-entropy
    (on training rows, or with `fit_on: valid` on validation rows; see Gate)."""

    def __init__(self, num_teachers: int, task: str = "binary", fit_on: str = "train", **kw: Any):
        super().__init__(num_teachers, task)
        self.fit_on = _fit_on(fit_on)
        self.logits = nn.Parameter(torch.zeros(num_teachers))

    def forward(self, ctx: WeightContext) -> Tensor:
        return torch.softmax(self.logits, 0).expand(ctx.teacher_logits.shape[0], -1)

    def aux_loss(self, ctx: WeightContext, weights: Tensor) -> Tensor:
        return mixture_ce(ctx, weights)


@register_weighting("gate")
class Gate(Weighting):
    """Teacher gating (Zhu et al., CIKM 2020): a small network sees every teacher's output for
    an instance (and optionally the student's embedding of its features) and outputs softmax
    weights over the teachers for that instance. It is trained so that the gated mixture
    predicts the label; the student learns from the mixture without pushing gradients into it.

    `fit_on`: the rows the gate is trained on. `train` (the paper's joint training) sees the
    teachers' outputs on their own training rows, where they are overfit; `valid` trains it on
    validation rows (one batch of them per student step), where teachers are as good as on
    unseen data. `entropy`: weight of an entropy bonus that keeps the gate from collapsing
    onto one teacher early.
    """

    def __init__(self, num_teachers: int, task: str = "binary", num_classes: int = 1,
                 feature_dim: int = 0, hidden: AtLeastOne = 64, use_features: bool = False,
                 fit_on: str = "train", entropy: NonNegative = 0.0, **kw: Any):
        super().__init__(num_teachers, task)
        self.fit_on = _fit_on(fit_on)
        self.entropy = float(entropy)
        self.use_features = bool(use_features) and feature_dim > 0
        in_dim = num_teachers * (1 if task == "binary" else num_classes) * 2
        if self.use_features:
            in_dim += feature_dim
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, num_teachers))
        nn.init.zeros_(self.net[-1].weight)  # start at the average
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, ctx: WeightContext) -> Tensor:
        z = ctx.teacher_logits.float().flatten(1)
        p = torch.sigmoid(z) if self.task == "binary" else torch.softmax(
            ctx.teacher_logits.float(), -1).flatten(1)
        x = torch.cat([z, p], 1)
        if self.use_features and ctx.features is not None:
            x = torch.cat([x, ctx.features.float()], 1)
        # the last layer writes [T, B] and the softmax runs over dim 0: a softmax over a 4-wide
        # inner dimension is ~3x slower on CPU than over the outer one (measured 158 vs 47 us)
        out = self.net[-1]
        scores = torch.addmm(out.bias.unsqueeze(1), out.weight, self.net[:-1](x).t())
        return torch.softmax(scores, dim=0).t()

    def aux_loss(self, ctx: WeightContext, weights: Tensor) -> Tensor:
        loss = mixture_ce(ctx, weights)
        if self.entropy > 0:
            loss = loss + self.entropy * (weights * weights.clamp_min(1e-12).log()).sum(1).mean()
        return loss


@register_weighting("confidence")
class Confidence(Weighting):
    """Confidence-aware (CA-MKD, Zhang et al. 2022): w_t = (1 - softmax(CE)_t) / (T - 1), so a
    teacher with lower cross-entropy against the label on this instance counts more."""

    def forward(self, ctx: WeightContext) -> Tensor:
        if self.num_teachers == 1:
            return _uniform(ctx, 1)
        ce = teacher_ce(ctx)
        return (1.0 - torch.softmax(ce, dim=1)) / (self.num_teachers - 1)


@register_weighting("best")
class Best(Weighting):
    """Best-Single per instance: the teacher with the lowest cross-entropy against the label."""

    def forward(self, ctx: WeightContext) -> Tensor:
        return F.one_hot(teacher_ce(ctx).argmin(1), self.num_teachers).float()


@register_weighting("random")
class RandomSingle(Weighting):
    """Rand-Single: one teacher drawn uniformly per instance (from torch's seeded RNG); evaluation
    uses the draw's expectation, the uniform weights, so `valid.kd_loss` (which early stopping may
    watch) and the reported `w.*` do not move with the draw on identical weights."""

    def forward(self, ctx: WeightContext) -> Tensor:
        if not self.training:
            return _uniform(ctx, self.num_teachers)
        b = ctx.teacher_logits.shape[0]
        pick = torch.randint(self.num_teachers, (b,), device=ctx.teacher_logits.device)
        return F.one_hot(pick, self.num_teachers).float()


@register_weighting("lr_ensemble")
class LREnsemble(Weighting):
    """LR-Ensemble: a logistic regression over the teachers' logits, trained on the label;
    its (non-negative) coefficients, normalised, are the teacher weights."""

    def __init__(self, num_teachers: int, task: str = "binary", **kw: Any):
        super().__init__(num_teachers, task)
        self.coef = nn.Parameter(torch.full((num_teachers,), 1.0 / num_teachers))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, ctx: WeightContext) -> Tensor:
        w = self.coef.clamp_min(0)
        total = w.sum()  # torch.where, not an `if float(...)`: no host sync per step on a GPU
        w = torch.where(total > 0, w / total.clamp_min(1e-30), torch.full_like(w, 1.0 / self.num_teachers))
        return w.expand(ctx.teacher_logits.shape[0], -1)

    def aux_loss(self, ctx: WeightContext, weights: Tensor) -> Tensor:
        z = ctx.teacher_logits.float()
        if self.task == "binary":
            return F.binary_cross_entropy_with_logits((z * self.coef).sum(1) + self.bias, ctx.label.float())
        return F.cross_entropy((z * self.coef.view(1, -1, 1)).sum(1), ctx.label.long())


# constructor arguments the objective fills in from the data and the teachers, not the user
_FILLED_IN = {"self", "num_teachers", "task", "teacher_scores", "hidden_dims", "feature_dim", "hidden_coded",
              "num_classes", "kd_loss", "kd_temperature"}


def weighting_params(name: str) -> list[str]:
    """The `weighting_params` a weighting takes: its constructor's keywords up the class
    hierarchy (subclasses forward `**kw`), less those filled in by the objective."""
    keys: set[str] = set()
    for klass in _weighting_class(name).__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None and klass is not nn.Module:
            keys.update(p.name for p in inspect.signature(init).parameters.values()
                        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        if klass is Weighting:
            break
    return sorted(keys - _FILLED_IN)


def check_weighting(name: str, params: dict[str, Any]) -> None:
    """An unknown weighting or a parameter it does not take (`entropyy`) is refused by name: the
    constructors accept `**kw`, so a typo would otherwise train with the default silently."""
    valid = weighting_params(name)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ConfigError(f"weighting {name!r} takes no parameter(s) {', '.join(map(repr, unknown))}; "
                          f"it takes: {', '.join(valid) or 'none'}")
    _typed(name, params)


def _typed(name: str, params: dict[str, Any]) -> dict[str, Any]:
    from mtkd.config_io import typed_params

    return typed_params(_weighting_class(name), params, f"weighting {name!r}: weighting_params")


def _weighting_class(name: str) -> type[Weighting]:
    if name not in WEIGHTINGS:
        raise ConfigError(f"unknown weighting {name!r}; known: {', '.join(sorted(WEIGHTINGS))}")
    return WEIGHTINGS[name]


def build_weighting(name: str, num_teachers: int, task: str, **params: Any) -> Weighting:
    user = {k: v for k, v in params.items() if k not in _FILLED_IN}  # values the objective fills in are its own
    return _weighting_class(name)(num_teachers, task, **{**params, **_typed(name, user)})
