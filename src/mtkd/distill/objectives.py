"""Distillation objectives, run by the same training loop as supervised training.

`Distillation` is offline KD from cached teacher outputs; `CoTraining` trains teachers and
the student together, teachers on their own cross-entropy, the student on cross-entropy plus
KD to the detached (weighted) teacher outputs, so no KD gradient ever reaches a teacher.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mtkd.data.atomic import sweep_dead_files
from mtkd.data.batch import Batch
from mtkd.dist import all_gather_rows, all_sum, barrier, world_from_env
from mtkd.distill.losses import HintRegression, default_kd_loss, kd_loss
from mtkd.distill.weighting import WeightContext, Weighting, mixture
from mtkd.models.base import CTRModel, ModelOutput
from mtkd.models.embedding import SharedFields
from mtkd.train.metrics import compute_metrics
from mtkd.train.objectives import Objective, task_loss
from mtkd.train.rows import Rows


class _KD(Objective):
    """Shared part: weights, the KD term and its validation version (`valid.kd_loss`)."""

    def __init__(self, task: str, names: list[str], weighting: Weighting, alpha: float = 0.5,
                 temperature: float = 1.0, kd: str | None = None, combine: str = "mixture",
                 gate_features: bool = False):
        self.task = task
        self.names = names
        self.weighting = weighting
        self.alpha = alpha
        self.temperature = temperature
        self.kd = kd or default_kd_loss(task)
        self.combine = combine
        self.gate_features = gate_features
        self.hidden_encoded = False
        self._eval: dict[str, Any] = {}
        self._before: Tensor | None = None  # the last step's inputs to the policy's reward
        self._step_tl: Tensor | None = None

    def _context(self, model: CTRModel, batch: Batch, student_logits: Tensor | None, tl: Tensor) -> WeightContext:
        feats = None
        if self.gate_features and hasattr(model, "embedding"):
            with torch.no_grad():
                feats = model.embedding.flat(model.embedding(batch), batch)
        return WeightContext(teacher_logits=tl, label=batch.label, task=self.task,
                             student_logits=student_logits, features=feats,
                             teacher_hidden=batch.teacher_hidden, hidden_encoded=self.hidden_encoded)

    def kd_term(self, student_logits: Tensor, tl: Tensor, w: Tensor) -> Tensor:
        """Per-row KD loss: to the weighted mixture, or the weighted sum of per-teacher losses."""
        if self.combine == "mixture":
            return kd_loss(self.kd, student_logits, mixture(w, tl), self.temperature)
        per = torch.stack([kd_loss(self.kd, student_logits, tl[:, t], self.temperature)
                           for t in range(tl.shape[1])], 1)
        return (w * per).sum(1)

    def student_loss(self, model: CTRModel, batch: Batch, out: ModelOutput, tl: Tensor,
                     aux_ctx: Callable[[], WeightContext | None] | None = None
                     ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """`aux_ctx`: makes the rows to train a trainable weighting on instead of this batch
        (held-out rows). Called after `reg_loss`, as is every other no-grad forward here: each
        resets the sparse tables' gathered rows, which the regulariser reads."""
        reg = model.reg_loss()
        held_out = aux_ctx() if aux_ctx is not None else None
        before = getattr(self.weighting, "before_update", None)
        self._before = before(model, batch, out.logits) if before is not None and model.training else None
        self._step_tl = tl.detach()
        ctx = self._context(model, batch, out.logits.detach(), tl)
        w = self.weighting(ctx)
        kd_rows = self.kd_term(out.logits, tl, w.detach())
        if getattr(self.weighting, "trains_itself", False):  # a policy may select no teacher: label only
            kd_rows = kd_rows * (w.detach().sum(1) > 0.5)
        kd = kd_rows.mean()
        ce = task_loss(self.task, out.logits, batch.label)
        loss = self.alpha * ce + (1 - self.alpha) * kd + reg
        aux = self.weighting.aux_loss(ctx, w) if held_out is None else \
            self.weighting.aux_loss(held_out, self.weighting(held_out))
        logs = {"ce_loss": ce.detach(), "kd_loss": kd.detach()}
        if aux is not None:
            loss = loss + aux
            logs["gate_loss"] = aux.detach()
        wm = w.detach().mean(0)
        for i, n in enumerate(self.names):
            logs[f"w.{n}"] = wm[i]
        return loss, logs, w

    # -- validation: KD loss against the (weighted) teacher mixture, no gradient ---------------
    def _trainable_weighting(self) -> bool:
        """A weighting that learns moves its own target: `kd_loss` of two epochs is then measured
        against two different mixtures (on Avazu a gate that collapsed onto one teacher in epoch 2
        made epoch 1 look best). `kd_loss_avg`, against the plain teacher average, stays put."""
        return any(p.requires_grad for p in self.weighting.parameters())

    def _eval_kd(self, split: str, model: CTRModel, batch: Batch, out: ModelOutput, tl: Tensor) -> None:
        ctx = self._context(model, batch, out.logits.detach(), tl)
        w = self.weighting(ctx)
        kd = self.kd_term(out.logits.float(), tl, w)
        acc = self._eval.setdefault(split, {"kd": 0.0, "kd_avg": 0.0, "n": 0, "w": torch.zeros(len(self.names))})
        acc["kd"] += float(kd.sum())
        if self._trainable_weighting():
            uniform = torch.full_like(w, 1.0 / w.shape[1])
            acc["kd_avg"] += float(self.kd_term(out.logits.float(), tl, uniform).sum())
        acc["n"] += int(kd.shape[0])
        acc["w"] += w.float().sum(0).cpu()

    def eval_names(self) -> tuple[str, ...]:
        return ("kd_loss", "kd_loss_avg") if self._trainable_weighting() else ("kd_loss",)

    def eval_result(self, split: str) -> dict[str, float]:
        acc = self._eval.pop(split, None) or {"kd": 0.0, "kd_avg": 0.0, "n": 0, "w": torch.zeros(len(self.names))}
        # under torchrun each rank summed its own block of the split: add the ranks' sums
        kd, kd_avg, n, *w = all_sum(torch.tensor([acc["kd"], acc["kd_avg"], acc["n"], *acc["w"].tolist()],
                                                 dtype=torch.float64)).tolist()
        if not n:
            return {}
        res = {"kd_loss": kd / n}
        if self._trainable_weighting():
            res["kd_loss_avg"] = kd_avg / n
        res.update({f"w.{name}": w[i] / n for i, name in enumerate(self.names)})
        return res

    # -- hooks for the reinforced-selection policy ---------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        if hasattr(self.weighting, "epoch"):
            self.weighting.epoch = epoch

    def bind(self, trainer: Any) -> None:
        self._trainer = trainer
        if hasattr(self.weighting, "autocast"):  # the policy measures the student as the trainer runs it
            self.weighting.autocast = trainer._autocast

    def _valid_probe(self) -> Any:
        """A fixed slice of up to 4,096 validation rows and a function scoring the student on it."""
        from mtkd.data.loader import BatchLoader
        from mtkd.train.metrics import compute_metrics

        if not hasattr(self, "_probe"):
            tr = self._trainer
            batch = next(iter(BatchLoader(tr.dataset, "valid", 4096, shuffle=True, seed=12345)))
            self._probe = batch.to(tr.device)
        key = "auc" if self.task == "binary" else "accuracy"

        def score() -> float:
            model = self._trainer.model
            was = model.training
            model.eval()
            with torch.no_grad():
                z = model(self._probe).logits
            model.train(was)
            return float(compute_metrics(self.task, self._probe.label.cpu().numpy(), z.float().cpu().numpy())[key])

        return score

    def after_step(self, model: CTRModel, batch: Batch, out: ModelOutput, step: int) -> dict[str, Tensor] | None:
        hook = getattr(self.weighting, "after_student_step", None)
        if hook is None:
            return None
        probe = self._valid_probe() if getattr(self.weighting, "reward_kind", "") == "valid" else None
        logs = hook(model, batch, self._step_tl, step, probe, before=self._before)
        return {(f"sel.{self.names[int(k[4:])]}" if k.startswith("sel.") else k): v for k, v in logs.items()}


class Distillation(_KD):
    """Offline KD: teacher logits come from the cache through the loader (batch.teacher_logits)."""

    name = "distillation"

    def __init__(self, task: str, teachers: Any, weighting: Weighting, hint: float = 0.0,
                 student_hidden_dim: int = 0, log: Callable[[str], None] = lambda s: None, **kw: Any):
        super().__init__(task, list(teachers.names), weighting, **kw)
        self.teachers = teachers
        self.log = log
        self.hint = hint
        self.hints = nn.ModuleList(HintRegression(student_hidden_dim, max(d, 1)) for d in teachers.hidden_dims()) \
            if hint > 0 else nn.ModuleList()
        # A weighting with its own encoding of hidden vectors (the policy's projection) gets them
        # encoded once per split, unless hint regression needs the raw vectors in the batch.
        self.hidden_encoded = hint == 0 and hasattr(weighting, "encode_split")
        self._encoded: dict[str, list[Any] | None] = {}

    def modules(self) -> list[nn.Module]:
        return [self.weighting, self.hints]

    def loader_extra(self, split: str) -> dict[str, Any]:
        hidden = self.teachers.hidden(split)
        if self.hidden_encoded and hidden is not None and any(h is not None for h in hidden):
            if split not in self._encoded:
                self._encoded[split] = [self._encoded_state(split, hidden)]  # one [N, T, K] array
            hidden = self._encoded[split]
        return {"teacher_logits": self.teachers.logits(split), "teacher_hidden": hidden}

    def _encoded_state(self, split: str, hidden: list[Any]) -> np.ndarray:
        """The policy's encoded hidden state of a split, cached as a memory-mapped .npy beside the
        first teacher's outputs (the projection is fitted on a fixed sample, so every seed and
        every later run with these teachers reads the same file). Written to a temporary name and
        renamed: a killed run never leaves half a file. Splits of a MergedDataset are gathered
        per run, so they are encoded in memory. Under torchrun rank 0 encodes and the others read
        its file (each rank reaches here for the same splits in the same order: the loaders)."""
        if self.teachers.view is not None:
            return self.weighting.encode_split(hidden)
        # keyed by every teacher's cache (their names hold their keys) and the policy's encoding
        key = hashlib.sha256(" ".join([self.weighting.state_key(), *(d.name for d in self.teachers.dirs)])
                             .encode()).hexdigest()[:16]
        path = self.teachers.dirs[0] / f"policy_state-{key}-{split}.npy"
        rank, world = world_from_env()
        if rank == 0 and not path.exists() and self._write_state(path, hidden):
            self.log(f"policy state of {split}: encoded into {path}")
        barrier(world)
        if not path.exists():  # not writable, or a node without the shared filesystem: in memory
            return self.weighting.encode_split(hidden)
        return np.load(path, mmap_mode="r")

    def _write_state(self, path: Path, hidden: list[Any]) -> bool:
        """Whether the encoded split could be written to `path`."""
        n = next(h.shape[0] for h in hidden if h is not None)
        sweep_dead_files(path.parent, ".policy_state-*.tmp")
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                            shape=(n, self.weighting.num_teachers, self.weighting.width))
            self.weighting.encode_split(hidden, out=out)
            out.flush()
            del out
            os.replace(tmp, path)
            return True
        except OSError:  # a read-only or full cache: the caller encodes in memory, as before the cache
            tmp.unlink(missing_ok=True)
            return False
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _held_out_context(self, model: CTRModel) -> WeightContext | None:
        """A batch of validation rows for a weighting fitted there (`fit_on: valid`): on training
        rows the teachers are overfit, so a gate fitted there learns to trust the most overfit
        teacher (measured: weight 0.998 on one teacher); on held-out rows it learns which
        teacher generalises. The rows cycle in an order fixed by (seed, epoch), so resume repeats."""
        if getattr(self.weighting, "fit_on", "train") != "valid":
            return None
        batch = next(self._held_out, None)
        if batch is None:
            self._held_out_epoch += 1
            self._held_out = self._held_out_iter(self._held_out_epoch)
            batch = next(self._held_out)
        b = batch.to(self._trainer.device, non_blocking=True)
        return self._context(model, b, None, b.teacher_logits)

    def _held_out_iter(self, epoch: int) -> Any:
        from mtkd.data.loader import BatchLoader

        tr = self._trainer
        if "valid" not in tr.dataset.split_names:
            raise ValueError("weighting fit_on: valid needs a valid split in the dataset")
        loader = BatchLoader(tr.dataset, "valid", tr.cfg.batch_size, shuffle=True, seed=tr.cfg.seed + 7919,
                             **self.loader_extra("valid"))
        loader.epoch = epoch
        return iter(loader)

    def loss(self, model: CTRModel, batch: Batch, out: ModelOutput) -> tuple[Tensor, dict[str, Tensor]]:
        assert batch.teacher_logits is not None, "the loader must join the cached teacher logits"
        loss, logs, w = self.student_loss(model, batch, out, batch.teacher_logits,
                                          lambda: self._held_out_context(model))
        if self.hint > 0 and batch.teacher_hidden is not None:
            have = [i for i, th in enumerate(batch.teacher_hidden) if th is not None]  # score teachers: none
            per = torch.stack([self.hints[i](out.hidden, batch.teacher_hidden[i]) for i in have], 1)
            hint = (w.detach()[:, have] * per).sum(1).mean()
            loss = loss + self.hint * hint
            logs["hint_loss"] = hint.detach()
        return loss, logs

    def eval_batch(self, split: str, model: CTRModel, batch: Batch, out: ModelOutput) -> None:
        if batch.teacher_logits is not None:
            self._eval_kd(split, model, batch, out, batch.teacher_logits)

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        if getattr(self.weighting, "fit_on", "train") == "valid":
            self._held_out_epoch = 1000 * epoch  # a fresh, repeatable order of valid rows per epoch
            self._held_out = self._held_out_iter(self._held_out_epoch)

class CoTraining(_KD):
    """Teachers and student trained together from scratch in one run."""

    name = "cotraining"

    def __init__(self, task: str, teachers: dict[str, CTRModel], weighting: Weighting,
                 student: CTRModel | None = None, share_embedding: bool = False, **kw: Any):
        super().__init__(task, list(teachers), weighting, **kw)
        self.teacher_models = nn.ModuleDict(teachers)
        if share_embedding:
            if student is None or not hasattr(student, "embedding"):
                raise ValueError("share_embedding needs a student with an `embedding` table")
            shared = student.embedding
            for t in self.teacher_models.values():
                if not hasattr(t, "embedding") or t.embedding.embedding_dim != shared.embedding_dim:
                    raise ValueError("share_embedding needs teachers with the student's embedding_dim")
                if t.embedding.n_dense != shared.n_dense:
                    raise ValueError("share_embedding needs teachers with the student's numeric_input")
                linear_dim = t.embedding.linear_dim
                t.embedding = SharedFields(shared, student.feature_map, linear_dim, shared.table is not None
                                           and shared.table.sparse) if linear_dim else shared
        self._teacher_eval: dict[str, Rows] = {}

    def modules(self) -> list[nn.Module]:
        return [self.teacher_models, self.weighting]

    def _teacher_logits(self, batch: Batch) -> tuple[Tensor, Tensor]:
        outs = [t(batch) for t in self.teacher_models.values()]
        ce = sum(task_loss(self.task, o.logits, batch.label) for o in outs)
        reg = sum(t.reg_loss() for t in self.teacher_models.values())
        return torch.stack([o.logits for o in outs], 1), ce + reg

    def loss(self, model: CTRModel, batch: Batch, out: ModelOutput) -> tuple[Tensor, dict[str, Tensor]]:
        tl, teacher_loss = self._teacher_logits(batch)
        loss, logs, _ = self.student_loss(model, batch, out, tl.detach())  # no KD gradient into teachers
        logs["teacher_loss"] = teacher_loss.detach()
        return loss + teacher_loss, logs

    def eval_batch(self, split: str, model: CTRModel, batch: Batch, out: ModelOutput) -> None:
        with torch.no_grad():
            tl = torch.stack([t(batch).logits.float() for t in self.teacher_models.values()], 1)
        self._eval_kd(split, model, batch, out, tl)
        self._teacher_eval.setdefault(split, Rows()).add(tl.cpu(), batch.label.cpu())

    def eval_result(self, split: str) -> dict[str, float]:
        res = super().eval_result(split)
        rows = self._teacher_eval.pop(split, None)
        if rows is not None:
            tl, y = (t.numpy() for t in all_gather_rows(*rows.tensors()))
            for i, n in enumerate(self.names):
                for k, v in compute_metrics(self.task, y, tl[:, i]).items():
                    if k in ("auc", "logloss", "accuracy"):
                        res[f"teacher.{n}.{k}"] = float(v)
        return res
