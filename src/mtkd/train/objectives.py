"""Objectives: what the one training loop optimises.

An objective computes a batch's loss from the model's output, names the quantities it logs,
and may act after each optimiser step. Supervised training, distillation, co-training and
reinforced teacher selection differ only here, never in the loop.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from mtkd.data.batch import Batch
from mtkd.models.base import CTRModel, ModelOutput


def task_loss(task: str, logits: Tensor, label: Tensor) -> Tensor:
    """Cross-entropy with the hard label: sigmoid BCE for binary tasks, softmax CE otherwise."""
    if task == "binary":
        return F.binary_cross_entropy_with_logits(logits.float(), label.float())
    return F.cross_entropy(logits.float(), label.long())


class Objective:
    """Interface. `loss` returns (loss to minimise, quantities to log as floats-in-tensors)."""

    name = "objective"

    def modules(self) -> list[nn.Module]:
        """Extra trainable modules (a gate, a policy); saved in checkpoints with the model."""
        return []

    def loss(self, model: CTRModel, batch: Batch, out: ModelOutput) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def after_step(self, model: CTRModel, batch: Batch, out: ModelOutput, step: int) -> dict[str, Tensor] | None:
        """Hook after each optimiser step (the policy update of reinforced selection); may return
        more quantities to log."""
        return None

    def on_epoch_start(self, epoch: int) -> None:
        """Hook at the start of each epoch (schedules such as the policy's warm-up)."""

    def bind(self, trainer: Any) -> None:
        """Called once by the trainer, for objectives that need its data or evaluation."""

    def loader_extra(self, split: str) -> dict[str, Any]:
        """Extra row-aligned arrays the loader joins into batches (cached teacher outputs)."""
        return {}

    def eval_batch(self, split: str, model: CTRModel, batch: Batch, out: ModelOutput) -> None:
        """Called for each evaluation batch, to accumulate extra quantities (e.g. kd_loss)."""

    def eval_result(self, split: str) -> dict[str, float]:
        """Extra quantities for the split just evaluated, beyond the task metrics."""
        return {}

    def eval_names(self) -> tuple[str, ...]:
        """The undotted names `eval_result` gives (`kd_loss`): a monitor that no evaluation logs is
        refused before training. Dotted ones (`w.NAME`) are checked at the first evaluation."""
        return ()

    def train(self, mode: bool = True) -> None:
        for m in self.modules():
            m.train(mode)

    def state_dict(self) -> dict[str, Any]:
        return {f"module{i}": m.state_dict() for i, m in enumerate(self.modules())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for i, m in enumerate(self.modules()):
            m.load_state_dict(state[f"module{i}"])


class Supervised(Objective):
    """Cross-entropy with the label plus the model's embedding regulariser."""

    name = "supervised"

    def __init__(self, task: str):
        self.task = task

    def loss(self, model: CTRModel, batch: Batch, out: ModelOutput) -> tuple[Tensor, dict[str, Tensor]]:
        ce = task_loss(self.task, out.logits, batch.label)
        reg = model.reg_loss()
        return ce + reg, {"ce_loss": ce.detach()}
