"""The typed batch every model and objective consumes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch


@dataclass
class Batch:
    """One mini-batch of an encoded split.

    cat:    [B, n_cat] int64 ids (0 padding, 1 OOV), or None when the dataset has no categorical field
    num:    [B, n_num] float32 transformed numeric values, or None
    seq:    name -> [B, max_len] int64 ids, 0 = padding
    label:  [B] float32 0/1 for binary tasks, int64 class ids for multi-class tasks
    index:  [B] int64 row numbers inside the split (joins cached teacher outputs)
    group:  [B] int64 group ids (for group AUC), or None
    scores: [B, n_scores] float32 score columns (external teachers), or None
    teacher_logits: [B, T] (binary) or [B, T, C] (multi-class) cached teacher logits, or None
    teacher_hidden: one [B, H_t] tensor per teacher (cached hidden vectors), or None
    """

    label: torch.Tensor
    index: torch.Tensor
    cat: torch.Tensor | None = None
    num: torch.Tensor | None = None
    seq: dict[str, torch.Tensor] = field(default_factory=dict)
    group: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    teacher_logits: torch.Tensor | None = None
    teacher_hidden: list[torch.Tensor] | None = None

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def head(self, n: int) -> "Batch":
        """The first n rows, as views (no copy): a random sample when the loader shuffled."""
        return self.select(slice(None, n))

    def select(self, rows: slice | torch.Tensor) -> "Batch":
        """These rows (a slice gives views, an index tensor copies) of every field."""
        def sel(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[rows]

        return replace(
            self, label=sel(self.label), index=sel(self.index), cat=sel(self.cat), num=sel(self.num),
            seq={k: v[rows] for k, v in self.seq.items()}, group=sel(self.group), scores=sel(self.scores),
            teacher_logits=sel(self.teacher_logits),
            teacher_hidden=None if self.teacher_hidden is None else [sel(h) for h in self.teacher_hidden],
        )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        def mv(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return replace(
            self,
            label=mv(self.label),
            index=mv(self.index),
            cat=mv(self.cat),
            num=mv(self.num),
            seq={k: v.to(device, non_blocking=non_blocking) for k, v in self.seq.items()},
            group=mv(self.group),
            scores=mv(self.scores),
            teacher_logits=mv(self.teacher_logits),
            teacher_hidden=None if self.teacher_hidden is None
            else [None if h is None else h.to(device, non_blocking=non_blocking) for h in self.teacher_hidden],
        )
