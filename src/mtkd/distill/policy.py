"""Reinforced multi-teacher selection (Yuan et al., AAAI 2021), for CTR and multi-class tasks.

A policy network looks at each (instance, teacher) pair and decides whether the student
learns from that teacher on that instance; it is trained by REINFORCE from the student's
own performance after it learned from the selection.

State of teacher t on instance i (`state_features`, in this order):
  1. the teacher's hidden vector h_t(i), layer-normalised (no affine); left out for score-column
     teachers, which have none                                              [H_t]
  2. the teacher's predicted probability (binary: sigmoid(z_t); multi-class: softmax, C values)
                                                                            [1 or C]
  3. log1p of the teacher's cross-entropy against the label                 [1]
  4. log1p of KL(teacher || student) for the instance                       [1]
  5. the student's own probability (binary: 1 value; multi-class: C)       [1 or C]
so d_t = H_t + 2 * P + 2 with P = 1 (binary) or C (multi-class).

Actions: `bernoulli` selects each teacher independently with probability sigmoid(head_t(s));
the student learns from the mean of the selected teachers' logits, and from the label alone
when none is selected. `categorical` draws one teacher per instance from a softmax over the
heads' scores. Rewards (per instance unless noted), computed with the student after its update
on the batch: `ce` = -CE; `ce_kd` = -(CE + KD to the plain average of all teachers, a target
that does not depend on the action); `valid` = change of a validation metric over an episode
of N steps (one reward for every action of the episode). REINFORCE with a moving-average
baseline and an optional entropy bonus; the policy has its own Adam optimiser.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtkd.distill.losses import default_kd_loss, kd_loss
from mtkd.distill.weighting import Weighting, WeightContext, register_weighting, teacher_ce


def state_features(ctx: WeightContext, t: int, use_hidden: bool = True) -> Tensor:
    """The documented state vector of teacher t for every instance of the batch: [B, d_t]."""
    z = ctx.teacher_logits[:, t].float()
    s = ctx.student_logits.float()
    if ctx.task == "binary":
        p_t, p_s = torch.sigmoid(z).unsqueeze(1), torch.sigmoid(s).unsqueeze(1)
        kl = (p_t * (torch.log(p_t.clamp_min(1e-7)) - torch.log(p_s.clamp_min(1e-7)))
              + (1 - p_t) * (torch.log((1 - p_t).clamp_min(1e-7)) - torch.log((1 - p_s).clamp_min(1e-7))))
    else:
        log_t, log_s = F.log_softmax(z, -1), F.log_softmax(s, -1)
        p_t, p_s = log_t.exp(), log_s.exp()
        kl = (p_t * (log_t - log_s)).sum(-1, keepdim=True)
    ce = teacher_ce(ctx)[:, t : t + 1]
    parts = []
    if use_hidden and ctx.teacher_hidden is not None and ctx.teacher_hidden[t] is not None:
        h = ctx.teacher_hidden[t].float()
        parts.append(F.layer_norm(h, h.shape[-1:]))
    parts += [p_t, torch.log1p(ce), torch.log1p(kl.clamp_min(0)), p_s]
    return torch.cat(parts, 1)


def reward_ce(student_logits: Tensor, label: Tensor, task: str) -> Tensor:
    """-CE of the (updated) student per instance."""
    if task == "binary":
        return -F.binary_cross_entropy_with_logits(student_logits.float(), label.float(), reduction="none")
    return -F.cross_entropy(student_logits.float(), label.long(), reduction="none")


def reward_ce_kd(student_logits: Tensor, label: Tensor, teacher_logits: Tensor, task: str,
                 temperature: float = 1.0) -> Tensor:
    """-(CE + KD to the average of all teachers) per instance."""
    target = teacher_logits.float().mean(1)
    return reward_ce(student_logits, label, task) - kd_loss(default_kd_loss(task), student_logits, target,
                                                            temperature)


@register_weighting("policy")
class Policy(Weighting):
    """Per-instance teacher selection by a policy trained with REINFORCE (see module doc)."""

    trains_itself = True  # its own optimiser: the trainer must not step it

    def __init__(self, num_teachers: int, task: str = "binary", state_dims: list[int] | None = None,
                 hidden: int = 0, action: str = "bernoulli", reward: str = "ce", lr: float = 1e-3,
                 baseline_momentum: float = 0.9, entropy: float = 0.0, warmup_epochs: int = 1,
                 episode_steps: int = 20, use_hidden: bool = True, **kw: Any):
        super().__init__(num_teachers, task)
        if action not in ("bernoulli", "categorical"):
            raise ValueError("policy action must be bernoulli or categorical")
        if reward not in ("ce", "ce_kd", "valid"):
            raise ValueError("policy reward must be ce, ce_kd or valid")
        dims = state_dims or [4] * num_teachers
        self.heads = nn.ModuleList(
            nn.Linear(d, 1) if hidden <= 0 else nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, 1))
            for d in dims)
        self.action, self.reward_kind = action, reward
        self.momentum, self.entropy_coef = baseline_momentum, entropy
        self.warmup_epochs, self.episode_steps = warmup_epochs, episode_steps
        self.use_hidden = use_hidden
        self.epoch = 0
        self.baseline: float | None = None
        self.opt = torch.optim.Adam(self.heads.parameters(), lr=lr)
        self._last: dict[str, Tensor] | None = None
        self._episode: list[dict[str, Tensor]] = []
        self._episode_start: float | None = None

    # -- policy ----------------------------------------------------------------------
    def scores(self, states: list[Tensor]) -> Tensor:
        return torch.cat([head(s) for head, s in zip(self.heads, states)], 1)  # [B, T]

    def states(self, ctx: WeightContext) -> list[Tensor]:
        return [state_features(ctx, t, self.use_hidden) for t in range(self.num_teachers)]

    def log_prob(self, scores: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """(sum over teachers of log pi(a|s) per instance, entropy per instance)."""
        if self.action == "bernoulli":
            dist = torch.distributions.Bernoulli(logits=scores)
            return dist.log_prob(actions).sum(1), dist.entropy().sum(1)
        dist = torch.distributions.Categorical(logits=scores)
        return dist.log_prob(actions.argmax(1)), dist.entropy()

    @property
    def active(self) -> bool:
        return self.epoch >= self.warmup_epochs

    def forward(self, ctx: WeightContext) -> Tensor:
        b, t = ctx.teacher_logits.shape[0], self.num_teachers
        if not self.active:  # warm-up: plain average
            return torch.full((b, t), 1.0 / t, device=ctx.teacher_logits.device)
        with torch.no_grad():
            states = self.states(ctx)
            scores = self.scores(states)
            if not self.training:  # evaluation: expected selection, no sampling
                probs = torch.sigmoid(scores) if self.action == "bernoulli" else torch.softmax(scores, 1)
                return probs / probs.sum(1, keepdim=True).clamp_min(1e-12)
            if self.action == "bernoulli":
                actions = torch.bernoulli(torch.sigmoid(scores))
            else:
                actions = F.one_hot(torch.multinomial(torch.softmax(scores, 1), 1).squeeze(1), t).float()
        self._last = {"states": states, "actions": actions}
        return actions / actions.sum(1, keepdim=True).clamp_min(1.0)  # rows of zeros: label only

    # -- REINFORCE ---------------------------------------------------------------------
    def reinforce(self, states: list[Tensor], actions: Tensor, rewards: Tensor) -> float:
        """One policy-gradient step; returns the mean reward."""
        mean_r = float(rewards.mean())
        b = mean_r if self.baseline is None else self.baseline
        logp, ent = self.log_prob(self.scores(states), actions)
        loss = -((rewards - b).detach() * logp).mean() - self.entropy_coef * ent.mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.baseline = mean_r if self.baseline is None else self.momentum * self.baseline + (1 - self.momentum) * mean_r
        return mean_r

    def after_student_step(self, student: nn.Module, batch: Any, teacher_logits: Tensor, step: int,
                           valid_metric: Any = None) -> dict[str, Tensor]:
        """Reward the selection just used, once the student has learned from it."""
        if self._last is None or not self.active:
            return {}
        last, self._last = self._last, None
        logs = {"sel_rate": last["actions"].mean()}
        for i in range(self.num_teachers):
            logs[f"sel.{i}"] = last["actions"][:, i].mean()
        if self.reward_kind == "valid":
            self._episode.append(last)
            if self._episode_start is None:
                self._episode_start = valid_metric()
            if len(self._episode) >= self.episode_steps:
                end = valid_metric()
                r = end - self._episode_start
                states = [torch.cat([e["states"][t] for e in self._episode]) for t in range(self.num_teachers)]
                actions = torch.cat([e["actions"] for e in self._episode])
                rewards = torch.full((actions.shape[0],), r, device=actions.device)
                logs["reward"] = torch.tensor(self.reinforce(states, actions, rewards))
                self._episode, self._episode_start = [], end
            return logs
        was_training = student.training
        student.eval()  # the reward measures the student, not its dropout noise
        with torch.no_grad():
            z = student(batch).logits
        student.train(was_training)
        if self.reward_kind == "ce":
            rewards = reward_ce(z, batch.label, self.task)
        else:
            rewards = reward_ce_kd(z, batch.label, teacher_logits, self.task)
        logs["reward"] = torch.tensor(self.reinforce(last["states"], last["actions"], rewards))
        return logs

    # -- checkpointing: optimiser, baseline and schedule travel with the weights ---------
    def get_extra_state(self) -> dict[str, Any]:
        return {"opt": self.opt.state_dict(), "baseline": self.baseline, "epoch": self.epoch,
                "episode_start": self._episode_start}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state["opt"])
        self.baseline, self.epoch = state["baseline"], state["epoch"]
        self._episode_start = state.get("episode_start")
        self._episode = []


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
        w = w / w.sum() if float(w.sum().detach()) > 0 else torch.full_like(w, 1.0 / self.num_teachers)
        return w.expand(ctx.teacher_logits.shape[0], -1)

    def aux_loss(self, ctx: WeightContext, weights: Tensor) -> Tensor:
        z = ctx.teacher_logits.float()
        if self.task == "binary":
            return F.binary_cross_entropy_with_logits((z * self.coef).sum(1) + self.bias, ctx.label.float())
        return F.cross_entropy((z * self.coef.view(1, -1, 1)).sum(1), ctx.label.long())
