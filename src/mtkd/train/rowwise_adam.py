"""Row-wise lazy Adam for sparse embedding tables.

SparseAdam's scheme (moments and weights of only the rows a batch touched; a global step for
bias correction) with `torch.optim.Adam`'s epsilon, m_hat / (sqrt(v_hat) + eps) (SparseAdam adds
eps to the uncorrected sqrt(v): the two differ only while gradients are near eps, the first
steps of a table initialised at 1e-4), without `grad.coalesce()`, whose sort dominated
the step on 10M-row tables: ids are de-duplicated through a per-table slot buffer (each id
writes its position, reads the winner back; winners are the distinct rows), their gradient
rows summed with `index_add_`, and only those rows of the table and moments are touched.
Measured in benchmarks/train_bench.py --proto: about 2x SparseAdam for the DNN.
`weight_decay` is lazy too, on the touched rows only: added to their gradient (Adam), or
decoupled, W *= 1 - lr * wd before the step (`decoupled=True`, AdamW).
"""

from __future__ import annotations

from typing import Any

import torch


class RowWiseAdam(torch.optim.Optimizer):
    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled: bool = False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, decoupled=decoupled))
        self._slots: dict[int, torch.Tensor] = {}  # scratch, not state: never saved in checkpoints

    def _rows(self, p: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(distinct rows in ascending order, index of each id's row among them). Ascending rows
        make the seven row gathers and scatters of the step walk the table in order: measured
        ~10% off the embedding update (small and 10M-row tables) for the cost of sorting them."""
        slot = self._slots.get(id(p))
        if slot is None or slot.shape[0] != p.shape[0] or slot.device != idx.device:
            slot = self._slots[id(p)] = torch.empty(p.shape[0], dtype=torch.long, device=idx.device)
        pos = torch.arange(idx.numel(), device=idx.device)
        slot[idx] = pos
        rows = idx[slot[idx] == pos].sort()[0]  # each id's winning position is unique: distinct rows
        slot[rows] = torch.arange(rows.numel(), device=idx.device)
        return rows, slot[idx]

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            lr, (b1, b2), eps = group["lr"], group["betas"], group["eps"]
            wd, decoupled = group.get("weight_decay", 0.0), group.get("decoupled", False)
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["exp_avg"] = torch.zeros_like(p)
                    st["exp_avg_sq"] = torch.zeros_like(p)
                st["step"] += 1
                bc1, bc2 = 1 - b1 ** st["step"], 1 - b2 ** st["step"]
                if not g.is_sparse:  # a dense gradient: plain Adam over the whole table
                    if wd and decoupled:
                        p.mul_(1 - lr * wd)
                    elif wd:
                        g = g.add(p, alpha=wd)
                    m, v = st["exp_avg"].lerp_(g, 1 - b1), st["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
                    p.addcdiv_(m, v.div(bc2).sqrt_().add_(eps), value=-lr / bc1)
                    continue
                idx, vals = g._indices()[0], g._values()
                rows, inv = self._rows(p, idx)
                gs = vals.new_zeros(rows.numel(), vals.shape[1]).index_add_(0, inv, vals)
                w = p.index_select(0, rows)
                if wd and decoupled:
                    w.mul_(1 - lr * wd)
                elif wd:
                    gs.add_(w, alpha=wd)
                m = st["exp_avg"].index_select(0, rows).lerp_(gs, 1 - b1)
                v = st["exp_avg_sq"].index_select(0, rows).mul_(b2).addcmul_(gs, gs, value=1 - b2)
                st["exp_avg"].index_copy_(0, rows, m)
                st["exp_avg_sq"].index_copy_(0, rows, v)
                # rows are distinct, so gather-update-scatter equals index_add_ and skips its atomics
                w.addcdiv_(m, v.div_(bc2).sqrt_().add_(eps), value=-lr / bc1)
                p.index_copy_(0, rows, w)
