"""Reinforced multi-teacher selection (Yuan et al., AAAI 2021), for CTR and multi-class tasks.

A policy network looks at each (instance, teacher) pair and decides whether the student
learns from that teacher on that instance; it is trained by REINFORCE from the student's
own performance after it learned from the selection.

State of teacher t on instance i (`state_tensor`; all teachers at once, [B, T, d]), in order:
  1. the teacher's predicted probability (binary: sigmoid(z_t); multi-class: softmax, C) [P]
  2. log1p of the teacher's cross-entropy against the label                 [1]
  3. log1p of KL(teacher || student) for the instance                       [1]
  4. the student's own probability (binary: 1 value; multi-class: C)       [P]
  5. the teacher's hidden vector h_t(i), layer-normalised (no affine), then projected onto its
     top `hidden_proj` principal components on the training split and whitened (unit variance
     per component; `hidden_proj: 0` keeps the whole layer-normalised vector); zero-padded to
     the longest teacher's width K; all zeros for score-column teachers, which have none   [K]
so d = 2 * P + 2 + K with P = 1 (binary) or C (multi-class). The projection is fitted on a fixed
sample of training rows when the teachers are scored, and only each row's K-float code is cached
(`distill.hidden`: a whole hidden layer is 400-800 floats, 70-140 GB per teacher on full Criteo);
with a hint loss, which needs the raw vectors, the policy fits the same code itself. A training
step gathers K floats per teacher from one [N, T, K] array per split.

Actions: `bernoulli` selects each teacher independently with probability sigmoid(head_t(s));
the student learns from the mean of the selected teachers' logits, and from the label alone
when none is selected. `categorical` draws one teacher per instance from a softmax over the
heads' scores. Each teacher has its own head (linear, or one hidden layer), all evaluated in one
batched einsum. Rewards (per instance unless noted), computed with the student after its update
on the batch: `ce` = -CE; `ce_kd` = -(CE + KD to the plain average of all teachers, a target
that does not depend on the action); `valid` = change of a validation metric over an episode
of N steps (one reward for every action of the episode). `reward_sample` (0.25 by default)
scores the updated student on that random fraction of the batch only, and the policy gradient
uses those rows (the extra forward was 2.0 of the policy's 3.2 ms per 2,048-row Frappe step over
a 7.5 ms plain step); 1.0 rewards every row, as in the paper. REINFORCE with a moving-average baseline (`baseline: batch`, the paper's) or, for `ce` and
`ce_kd` and by default, with each instance's own reward before the update subtracted first
(`baseline: instance`): the reward then measures what the step's selection did for the instance
rather than how hard the instance is, which is most of the variance of a per-instance CE. On
Frappe with a teacher trained on 5% of the rows (test AUC 0.76) in a pool of four good ones, the
`batch` baseline left its selection rate at 0.47-0.56 after five epochs, `instance` took it to
0.37-0.40 (good teachers 0.47-0.61). An optional entropy bonus; own Adam (lr 1e-2). `update_every:
k` (ce / ce_kd) takes one policy step per k student steps on all their rewarded rows: less fixed
cost, k times fewer policy steps (Frappe, k = 4: the weak teacher's selection rate fell to 0.42
instead of 0.35 in five epochs), so the default is 1.
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
import weakref
from typing import Annotated, Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from mtkd.dist import all_sum, sync_gradients
from mtkd.distill.hidden import HiddenCode, sample_rows
from mtkd.distill.policy_state import Heads, reward_ce, reward_ce_kd, small_state, state_tensor
from mtkd.distill.weighting import (AtLeastOne, Count, NonNegative, Positive, Weighting, WeightContext,
                                    register_weighting)
from mtkd.errors import ConfigError

HIDDEN_PROJ = 16  # default width of a teacher's hidden code in the state


def _mode_dependent(model: nn.Module) -> bool:
    """Whether train and eval forwards differ (dropout with p > 0, batch norm)."""
    return any(isinstance(m, nn.modules.batchnorm._NormBase)
               or (isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0) for m in model.modules())


@register_weighting("policy")
class Policy(Weighting):
    """Per-instance teacher selection by a policy trained with REINFORCE (see module doc)."""

    trains_itself = True  # its own optimiser: the trainer must not step it

    def __init__(self, num_teachers: int, task: str = "binary", hidden_dims: Sequence[int] | None = None,
                 num_classes: int = 1, hidden_proj: Count = HIDDEN_PROJ, hidden: Count = 0,
                 action: str = "bernoulli", reward: str = "ce", lr: Positive = 1e-2,
                 baseline_momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9, entropy: NonNegative = 0.0,
                 warmup_epochs: Count = 1, episode_steps: AtLeastOne = 20, use_hidden: bool = True,
                 reward_sample: Annotated[float, Field(gt=0, le=1)] = 0.25, baseline: str = "instance",
                 update_every: AtLeastOne = 1,
                 hidden_coded: bool = False, kd_loss: str | None = None, kd_temperature: float = 1.0, **kw: Any):
        super().__init__(num_teachers, task)
        if action not in ("bernoulli", "categorical"):
            raise ConfigError("policy action must be bernoulli or categorical")
        if reward not in ("ce", "ce_kd", "valid"):
            raise ConfigError("policy reward must be ce, ce_kd or valid")
        if baseline not in ("batch", "instance"):
            raise ConfigError(f"policy baseline must be batch or instance, got {baseline!r}")
        raw = [int(h) if use_hidden else 0 for h in (hidden_dims or [0] * num_teachers)]
        if len(raw) != num_teachers:
            raise ConfigError(f"policy: {len(raw)} hidden sizes for {num_teachers} teachers")
        self.raw_dims = raw
        # hidden_coded: the teachers' cache already holds each vector's code (distill.hidden)
        self.hidden_coded = hidden_coded
        self.enc_dims = list(raw) if hidden_coded else [min(h, hidden_proj) if hidden_proj else h for h in raw]
        self.width = max(self.enc_dims, default=0)
        p = 1 if task == "binary" else num_classes
        self.heads = Heads(num_teachers, 2 * p + 2 + self.width, hidden)
        self.hidden_proj = hidden_proj
        for t, (h, k) in enumerate(zip(raw, self.enc_dims)):  # identity until fit_projection
            if not hidden_coded:
                self.register_buffer(f"proj_mean{t}", torch.zeros(h))
                self.register_buffer(f"proj_w{t}", torch.eye(h, k))
        self.action, self.reward_kind = action, reward
        self.momentum, self.entropy_coef = baseline_momentum, entropy
        self.warmup_epochs, self.episode_steps = warmup_epochs, episode_steps
        self.reward_sample = reward_sample
        self.baseline_kind = baseline
        self.update_every = update_every
        self.kd_loss, self.kd_temperature = kd_loss, kd_temperature  # reward ce_kd: the run's KD term
        # the trainer's autocast (bf16 or none; `_KD.bind`): the reward's forward after the update
        # runs in the precision of the one before it, or their difference is rounding, not learning
        self.autocast: Callable[[], Any] = contextlib.nullcontext
        self._pending: list[dict[str, Tensor]] = []  # ce / ce_kd: steps rewarded, not yet learned from
        self.epoch = 0
        self.baseline: Tensor | float | None = None  # a float when read back from a checkpoint
        self.opt = torch.optim.Adam(self.heads.parameters(), lr=lr, fused=True)  # one kernel, not ~6 ops per tensor
        self._last: dict[str, Tensor] | None = None
        self._student: tuple[weakref.ref, bool] | None = None  # (student, its forward depends on train/eval)
        self._episode: list[dict[str, Tensor]] = []
        self._episode_start: float | None = None

    # -- the hidden part of the state --------------------------------------------------
    @torch.no_grad()
    def fit_projection(self, hidden: Sequence[np.ndarray | None], max_rows: int = 50_000, seed: int = 0) -> None:
        """PCA (whitened) of each teacher's layer-normalised hidden vectors on up to `max_rows`
        training rows (the same code `distill.hidden` caches when no hint loss needs the raw
        vectors). A no-op for teachers without hidden vectors, when hidden_proj is 0, or when the
        vectors arrive coded."""
        if not self.hidden_proj or self.hidden_coded:
            return
        for t, arr in enumerate(hidden):
            k = self.enc_dims[t]
            if arr is None or k == 0:
                continue
            code = HiddenCode.fit(np.asarray(arr[sample_rows(arr.shape[0], max_rows, seed)]), k)
            getattr(self, f"proj_mean{t}").copy_(code.mean)
            getattr(self, f"proj_w{t}").copy_(code.w)

    def encode_hidden(self, t: int, h: Tensor) -> Tensor:
        if self.hidden_coded:
            return h.float()
        x = F.layer_norm(h.float(), h.shape[-1:])
        if not self.hidden_proj:
            return x
        return (x - getattr(self, f"proj_mean{t}")) @ getattr(self, f"proj_w{t}")

    @torch.no_grad()
    def encode_hidden_array(self, t: int, arr: np.ndarray, block: int = 65536,
                            out: np.ndarray | None = None) -> np.ndarray:
        """A whole split's hidden vectors of teacher t, encoded once, a block of rows at a time
        into `out` (a new array, or a view such as one teacher's slice of a memory-mapped file)."""
        if out is None:
            out = np.empty((arr.shape[0], self.enc_dims[t]), dtype=np.float32)
        dev = next(self.heads.parameters()).device  # the projection moved with the policy (a GPU run)
        for i in range(0, arr.shape[0], block):
            x = torch.tensor(np.asarray(arr[i : i + block]), device=dev)  # a copy: the cache is read-only
            out[i : i + block] = self.encode_hidden(t, x).cpu().numpy()
        return out

    def encode_split(self, hidden: Sequence[np.ndarray | None], out: np.ndarray | None = None) -> np.ndarray:
        """A split's hidden part of the state for all teachers, [N, T, K] (zero-padded): the loader
        then gathers one array per batch instead of one per teacher. `out`: a zero-filled array to
        write into (a memory-mapped file, so a 45M-row split never sits in RAM)."""
        n = next(h.shape[0] for h in hidden if h is not None)
        if out is None:
            out = np.zeros((n, self.num_teachers, self.width), dtype=np.float32)
        for t, h in enumerate(hidden):
            if h is not None and self.enc_dims[t]:
                self.encode_hidden_array(t, h, out=out[:, t, : self.enc_dims[t]])
        return out

    def state_key(self) -> str:
        """Digest of everything the encoded hidden state depends on besides the teachers' cache."""
        h = hashlib.sha256(f"{self.width} {self.enc_dims}".encode())
        for name, buf in sorted(self.named_buffers()):
            h.update(name.encode())
            h.update(buf.detach().cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    # -- policy ----------------------------------------------------------------------
    def states(self, ctx: WeightContext) -> Tensor:
        if self.width and ctx.hidden_encoded and ctx.teacher_hidden is not None:
            return torch.cat([small_state(ctx), ctx.teacher_hidden[0].float()], -1)  # [B, T, K] from encode_split
        hidden: list[Tensor | None] = [None] * self.num_teachers
        if self.width and ctx.teacher_hidden is not None:
            hidden = [None if h is None or self.enc_dims[t] == 0 else self.encode_hidden(t, h)
                      for t, h in enumerate(ctx.teacher_hidden)]
        return state_tensor(ctx, hidden, self.width)

    def scores(self, states: Tensor) -> Tensor:
        return self.heads(states)  # [B, T]

    def log_prob(self, scores: Tensor, actions: Tensor, entropy: bool = True) -> tuple[Tensor, Tensor | None]:
        """(sum over teachers of log pi(a|s) per instance, entropy per instance or None)."""
        if self.action == "bernoulli":
            logp = -F.binary_cross_entropy_with_logits(scores, actions, reduction="none").sum(1)
            ent = F.binary_cross_entropy_with_logits(scores, torch.sigmoid(scores), reduction="none").sum(1) \
                if entropy else None
            return logp, ent
        logq = F.log_softmax(scores, 1)
        ent = -(logq.exp() * logq).sum(1) if entropy else None
        return logq.gather(1, actions.argmax(1, keepdim=True)).squeeze(1), ent

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
                p = torch.sigmoid(scores)  # u < p is a Bernoulli(p) draw, 3x cheaper than torch.bernoulli on CPU
                actions = (torch.rand_like(p) < p).to(p.dtype)
            else:
                actions = F.one_hot(torch.multinomial(torch.softmax(scores, 1), 1).squeeze(1), t).float()
        self._last = {"states": states, "actions": actions}
        return actions / actions.sum(1, keepdim=True).clamp_min(1.0)  # rows of zeros: label only

    # -- REINFORCE ---------------------------------------------------------------------
    def score_grad(self, scores: Tensor, actions: Tensor, advantage: Tensor) -> Tensor:
        """d loss / d scores [n, T] of the REINFORCE loss -mean(A * log pi(a|s)) - c * mean(H), in
        closed form: (a - p) for Bernoulli heads, (onehot(a) - q) for the softmax, and the entropy's
        -s p (1 - p) / -q (log q + H). The heads' own backward is then one einsum, where autograd
        spent ~0.3 ms a step on a graph of a dozen tiny nodes."""
        n = scores.shape[0]
        if self.action == "bernoulli":
            p = torch.sigmoid(scores)
            g = (p - actions) * advantage.unsqueeze(1)
            if self.entropy_coef > 0:
                g = g + self.entropy_coef * scores * p * (1 - p)
        else:
            logq = F.log_softmax(scores, 1)
            q = logq.exp()
            g = (q - actions) * advantage.unsqueeze(1)
            if self.entropy_coef > 0:
                ent = -(q * logq).sum(1, keepdim=True)
                g = g + self.entropy_coef * q * (logq + ent)
        return g / n

    def reinforce(self, states: Tensor, actions: Tensor, rewards: Tensor) -> Tensor:
        """One policy-gradient step; returns the mean reward (of every rank's rewards under torchrun:
        the moving baseline, which a checkpoint saves from rank 0, is then the same on every rank).
        The mean and the baseline stay on the rewards' device: on a GPU a `float()` here was a host
        sync on every step."""
        rows = torch.full((), float(rewards.numel()), dtype=torch.float64, device=rewards.device)
        total = all_sum(torch.stack([rewards.sum().double(), rows]))
        mean_r = total[0] / total[1]
        b = mean_r if self.baseline is None else self.baseline
        h = self.heads
        self.opt.zero_grad(set_to_none=True)
        if h.hidden > 0:  # the hidden layer's backward through autograd, seeded with the closed form
            scores = self.scores(states)
            scores.backward(self.score_grad(scores.detach(), actions, rewards - b))
        else:  # linear heads: scores = <w_t, s_t> + b_t, so dw_t = sum_i g_it s_it
            with torch.no_grad():
                g = self.score_grad(self.scores(states), actions, rewards - b)
                h.w.grad = torch.einsum("bt,btd->td", g, states)
                h.b.grad = g.sum(0)
        sync_gradients(list(h.parameters()))  # under torchrun: a step on every rank's rewards
        self.opt.step()
        self.baseline = mean_r if self.baseline is None else self.momentum * self.baseline + (1 - self.momentum) * mean_r
        return mean_r

    def _reward(self, z: Tensor, label: Tensor, tl: Tensor) -> Tensor:
        if self.reward_kind == "ce":
            return reward_ce(z, label, self.task)
        return reward_ce_kd(z, label, tl, self.task, self.kd_temperature, self.kd_loss)

    def _toggles(self, student: nn.Module) -> bool:
        """Whether measuring this student needs eval mode (it trains with dropout or batch norm)."""
        if self._student is None or self._student[0]() is not student:  # walk its layers once per student
            self._student = (weakref.ref(student), _mode_dependent(student))
        return student.training and self._student[1]

    def _rewarded(self, n: int) -> int:
        """How many of a batch's n rows are rewarded (the loader shuffles: the first ones are a sample)."""
        return n if self.reward_sample >= 1 else max(1, int(round(n * self.reward_sample)))

    @torch.no_grad()
    def before_update(self, student: nn.Module, batch: Any, logits: Tensor) -> Tensor | None:
        """The `instance` baseline's "before": the student's logits on the rewarded rows ahead of
        its update, measured as the reward after it is (eval mode). The training forward's logits
        carry the train/eval gap of dropout and batch norm, which no selection caused: with the
        Frappe student (dropout 0.2, batch norm) that gap had 36x the spread of a step's effect."""
        if self.baseline_kind != "instance" or self.reward_kind == "valid" or not self.active:
            return None
        n = self._rewarded(logits.shape[0])
        if not self._toggles(student):
            return logits.detach()[:n]
        student.eval()
        try:
            return student(batch.head(n) if n < logits.shape[0] else batch).logits
        finally:
            student.train()

    def after_student_step(self, student: nn.Module, batch: Any, teacher_logits: Tensor, step: int,
                           valid_metric: Any = None, before: Tensor | None = None) -> dict[str, Tensor]:
        """Reward the selection just used, once the student has learned from it. `before`: the
        student's logits on the batch before the update (the `instance` baseline; `before_update`)."""
        if self._last is None or not self.active:
            return {}
        last, self._last = self._last, None
        rates = last["actions"].mean(0)
        logs = {"sel_rate": rates.mean()}
        for i in range(self.num_teachers):
            logs[f"sel.{i}"] = rates[i]
        if self.reward_kind == "valid":
            self._episode.append(last)
            if self._episode_start is None:
                self._episode_start = valid_metric()
            if len(self._episode) >= self.episode_steps:
                end = valid_metric()
                r = end - self._episode_start
                states = torch.cat([e["states"] for e in self._episode])
                actions = torch.cat([e["actions"] for e in self._episode])
                rewards = torch.full((actions.shape[0],), r, device=actions.device)
                logs["reward"] = self.reinforce(states, actions, rewards)  # on the device, as the other logs
                self._episode, self._episode_start = [], end
            return logs
        states, actions, label, tl = last["states"], last["actions"], batch.label, teacher_logits
        if self.reward_sample < 1:  # the loader shuffles, so the batch's first rows are a random sample
            n = self._rewarded(actions.shape[0])
            states, actions, label, tl = states[:n], actions[:n], label[:n], tl[:n]
            batch = batch.head(n)
            before = None if before is None else before[:n]
        toggle = self._toggles(student)
        if toggle:
            student.eval()  # the reward measures the student, not its dropout noise
        with torch.no_grad(), self.autocast():
            z = student(batch).logits.float()
        if toggle:
            student.train()
        rewards = self._reward(z, label, tl)
        if self.baseline_kind == "instance" and before is not None:
            # the instance's own reward before the update: what is left is what this step's
            # selection did for it, not how hard the instance is
            rewards = rewards - self._reward(before.detach(), label, tl)
        logs["reward"] = rewards.mean()
        self._pending.append({"states": states, "actions": actions, "rewards": rewards})
        if len(self._pending) >= self.update_every:  # one policy step per `update_every` student steps
            cat = self._pending[0] if len(self._pending) == 1 else \
                {k: torch.cat([p[k] for p in self._pending]) for k in ("states", "actions", "rewards")}
            self._pending = []
            self.reinforce(cat["states"], cat["actions"], cat["rewards"])
        return logs

    # -- checkpointing: optimiser, baseline and schedule travel with the weights ---------
    def get_extra_state(self) -> dict[str, Any]:
        baseline = None if self.baseline is None else float(self.baseline)
        return {"opt": self.opt.state_dict(), "baseline": baseline, "epoch": self.epoch,
                "episode_start": self._episode_start, "episode": self._episode, "pending": self._pending,
                "reward_kd": [self.kd_loss, self.kd_temperature]}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state["opt"])
        self.baseline, self.epoch = state["baseline"], state["epoch"]
        self._episode_start = state.get("episode_start")
        self._episode = list(state.get("episode", []))
        self._pending = list(state.get("pending", []))
        if self.reward_kind == "ce_kd" and "reward_kd" not in state and \
                (self.kd_loss is not None or self.kd_temperature != 1.0):
            warnings.warn("resuming a policy run from a checkpoint of an earlier mtkd, whose reward ce_kd used the "
                          "default KD loss at temperature 1: the epochs from here reward with this run's "
                          f"kd_loss {self.kd_loss or 'default'} at temperature {self.kd_temperature}; start it over "
                          "(--force) for one reward throughout", stacklevel=2)
