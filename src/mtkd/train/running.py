"""Training quantities of an epoch: summed on the device step by step, averaged when read.

The sums stay on the device (no per-step sync); a set of logged keys is one float64 vector, one
stack per step instead of three ops per key (a policy logs ~12 quantities a step). Under
torchrun the means are over every rank's rows: rank 0's shard alone differs from rank 1's, and
a `train.*` monitor read per rank stopped the ranks at different epochs (a crash or a hang).
"""

from __future__ import annotations

from typing import Any

import torch

from mtkd.dist import all_sum_named


class RunningMeans:
    def __init__(self, device: torch.device):
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.seen = 0
        self._acc: dict[tuple[str, ...], list[Any]] = {}  # keys -> [sum of value * rows, rows]

    def add(self, loss: torch.Tensor, logs: dict[str, torch.Tensor], n: int) -> None:
        self.seen += n
        self.loss += loss.detach().double() * n
        if logs:
            keys = tuple(logs)
            dev = self.loss.device  # a log made on the host (a Python float's tensor) joins the device's
            vec = torch.stack([v.detach().reshape(()).float().to(dev) for v in logs.values()]).double() * n
            acc = self._acc.setdefault(keys, [torch.zeros_like(vec), 0])
            acc[0] += vec
            acc[1] += n

    def local_loss(self) -> float:
        """This rank's mean loss so far (the progress bar: no collective per update)."""
        return float(self.loss / max(self.seen, 1))

    def means(self, rates: dict[str, float] | None = None) -> dict[str, float]:
        """`train.loss` and each logged key's mean over the rows of the steps that logged it,
        over all ranks; `rates` (per rank, e.g. samples/s) are summed over ranks. Every rank
        must call it (a collective under torchrun)."""
        sums: dict[str, float] = {"\0loss": float(self.loss)}
        rows: dict[str, float] = {"\0loss": float(self.seen)}
        for keys, (vec, count) in self._acc.items():
            for k, x in zip(keys, vec.tolist()):
                sums[k] = sums.get(k, 0.0) + x
                rows[k] = rows.get(k, 0.0) + count
        packed = all_sum_named({**{f"s{k}": v for k, v in sums.items()}, **{f"n{k}": v for k, v in rows.items()},
                                **{f"r{k}": v for k, v in (rates or {}).items()}})
        out = {"train.loss" if k == "\0loss" else f"train.{k}": packed[f"s{k}"] / max(packed[f"n{k}"], 1.0)
               for k in (name[1:] for name in packed if name[0] == "s")}  # keys of every rank
        return {**out, **{f"train.{k}": packed[f"r{k}"] for k in rates or {}}}
