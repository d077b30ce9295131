"""Optimisers of a run: fused Adam on dense parameters, row-wise lazy Adam on sparse tables."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mtkd.config import TrainConfig
from mtkd.errors import ConfigError


def build_optimizers(model: nn.Module, extra: list[nn.Module], cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    """Dense parameters get the configured optimiser; sparse embedding tables get a row-wise lazy
    Adam, which updates only the rows a batch touched (the fast path for 10M-id vocabularies)."""
    sparse_ids: set[int] = set()
    sparse: list[nn.Parameter] = []
    extra = [m for m in extra if not getattr(m, "trains_itself", False)]  # e.g. the policy's own Adam
    for mod in [model, *extra]:
        for m in mod.modules():
            if isinstance(m, nn.Embedding) and m.sparse and id(m.weight) not in sparse_ids:
                sparse_ids.add(id(m.weight))
                sparse.append(m.weight)
    dense, seen = [], set(sparse_ids)
    for mod in [model, *extra]:
        for p in mod.parameters():  # shared modules (co-training's shared embedding) appear once
            if id(p) not in seen and p.requires_grad:
                seen.add(id(p))
                dense.append(p)
    o = cfg.optimizer
    opts: list[torch.optim.Optimizer] = []
    if dense:
        kw: dict[str, Any] = {"lr": o.lr, "weight_decay": o.weight_decay}
        # fused kernels: one pass over all parameters instead of ~6 ops per tensor (CPU and CUDA)
        fused = {"fused": True} if all(p.dtype.is_floating_point for p in dense) else {}
        if o.name == "adam":
            opts.append(torch.optim.Adam(dense, **kw, **fused))
        elif o.name == "adamw":
            opts.append(torch.optim.AdamW(dense, **kw, **fused))
        elif o.name == "sgd":
            opts.append(torch.optim.SGD(dense, **kw))
        else:
            opts.append(torch.optim.Adagrad(dense, **kw))
    if sparse:
        lr = o.sparse_lr or o.lr
        if o.weight_decay and o.name in ("sgd", "adagrad"):  # torch's sparse SGD / Adagrad take none
            raise ConfigError(f"optimizer.weight_decay with sparse embedding tables needs adam or adamw (lazy "
                              f"decay of the touched rows); {o.name} has none for sparse gradients: set "
                              "weight_decay: 0, or params.sparse: false")
        if o.name == "sgd":
            opts.append(torch.optim.SGD(sparse, lr=lr))
        elif o.name == "adagrad":
            opts.append(torch.optim.Adagrad(sparse, lr=lr))
        else:
            from mtkd.train.rowwise_adam import RowWiseAdam

            opts.append(RowWiseAdam(sparse, lr=lr, weight_decay=o.weight_decay, decoupled=o.name == "adamw"))
    return opts


class EmbeddingL2:
    """The gradient of lambda * sum ||W||^2 over every dense embedding table of the trained models.

    Added straight to the gradients (2 * lambda * W, one fused op per coefficient) rather than
    through the loss: the same update without a table-sized temporary and its backward. Every
    row decays every step, touched or not, as in FuxiCTR and DeepCTR-Torch, which is what keeps
    the rare ids of a 26-field Zipf vocabulary from overfitting within an epoch. A parameter
    shared by two models (co-training's shared embedding) gets both coefficients.
    """

    def __init__(self, modules: list[nn.Module]) -> None:
        from mtkd.models.base import CTRModel

        models = {id(m): m for mod in modules for m in mod.modules()  # each model once
                  if isinstance(m, CTRModel) and m.embedding_regularizer > 0}
        alpha: dict[int, tuple[nn.Parameter, float]] = {}
        for m in models.values():
            for p in m.l2_parameters():
                if p.requires_grad:
                    alpha[id(p)] = (p, alpha.get(id(p), (p, 0.0))[1] + 2.0 * m.embedding_regularizer)
        groups: dict[float, list[nn.Parameter]] = {}
        for p, a in alpha.values():
            groups.setdefault(a, []).append(p)
        self.groups = list(groups.items())

    def __bool__(self) -> bool:
        return bool(self.groups)

    @torch.no_grad()
    def apply(self) -> None:
        """Call after backward, before clipping and the optimiser step."""
        for a, params in self.groups:
            ps = [p for p in params if p.grad is not None]
            if ps:
                torch._foreach_add_([p.grad for p in ps], ps, alpha=a)
