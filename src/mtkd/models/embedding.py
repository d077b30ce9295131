"""Field embeddings: every input field of a FeatureMap as vectors, and first-order weights.

Kept apart from `layers.py` (the interaction blocks) because every model's input goes
through here, and co-training shares these tables between models.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from mtkd.data.batch import Batch
from mtkd.data.feature_map import FeatureMap
from mtkd.errors import ConfigError



NumericInput = Literal["embed", "dense"]  # how numeric fields enter a model (README, Models)

class FeatureEmbedding(nn.Module):
    """Every field of a FeatureMap as one [B, F, D] tensor: categorical, numeric, then sequence fields.

    All categorical fields share ONE table (per-field offsets) so a batch costs one gather.
    With `numeric="embed"` (the default) numeric field j is `value * v_j` (a learned vector per
    field, as FuxiCTR does); with `numeric="dense"` numeric values are not embedded but appended
    to the flat DNN input by `flat` / `with_dense` (as DeepCTR-Torch does: a narrower first
    layer, and interaction layers see only the embedded fields). Each sequence field has its
    own table (id 0 = padding, kept at zero) and is mean-pooled over its non-padding positions.
    A field with `share` set (the schema's `share_embedding`) reads its owner's rows instead: the
    two sentences of a pair, or a target item and the history of items, mean one thing per id.
    Rows gathered from sparse tables in a forward with grad enabled are kept for
    `CTRModel.reg_loss`; dense tables are regularised whole, through `l2_parameters`.

    `linear_dim=C` stores each id's first-order weights (C per id) as C extra columns of the
    same tables (`with_first_order`): one gather, one backward and one optimiser update serve
    both, where a separate width-C table cost a second of each (DeepFM: ~2 ms of a 90 ms step).
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int,
        sparse: bool = False,
        init_std: float = 1e-4,
        numeric: str = "embed",
        linear_dim: int = 0,
    ) -> None:
        super().__init__()
        if embedding_dim < 1:
            raise ConfigError(f"embedding_dim must be >= 1, got {embedding_dim}")
        if numeric not in ("embed", "dense"):
            raise ConfigError(f"numeric_input must be 'embed' or 'dense', got {numeric!r}")
        n_num = len(feature_map.numeric)
        self.n_dense = n_num if numeric == "dense" else 0
        if feature_map.num_fields == self.n_dense:
            raise ConfigError(
                "numeric_input 'dense' leaves no field to embed (the data has only numeric fields); "
                "set numeric_input: embed"
            )
        width = embedding_dim + linear_dim
        cats = feature_map.categorical
        sizes = [f.vocab_size for f in cats if f.share is None]  # a shared vocabulary has rows once
        self.table = nn.Embedding(sum(sizes), width, sparse=sparse) if sizes else None
        start = dict(zip([f.name for f in cats if f.share is None], [0, *np.cumsum(sizes).tolist()]))
        offsets = torch.tensor([start[f.share or f.name] for f in cats], dtype=torch.long)
        self.register_buffer("offsets", offsets, persistent=False)
        self.numeric = nn.Parameter(torch.empty(n_num, width)) if n_num and not self.n_dense else None
        # dense numerics are not embedded, but keep their first-order weights
        self.numeric_linear = nn.Parameter(torch.empty(self.n_dense, linear_dim)) if self.n_dense and linear_dim else None
        self.seq_names = [s.name for s in feature_map.sequences]
        owners = [s.name for s in feature_map.sequences if s.share is None]
        self.sequences = nn.ModuleList(  # one table per vocabulary; fields that share one read it
            nn.Embedding(s.vocab_size, width, padding_idx=0, sparse=sparse)
            for s in feature_map.sequences if s.share is None
        )
        # index into `sequences`, or -1 - j: the rows of categorical field j in `table` (a history
        # of items sharing the item's embedding)
        cat_names = [f.name for f in cats]
        self.seq_table = [owners.index(s.share or s.name) if (s.share or s.name) in owners
                          else -1 - cat_names.index(s.share) for s in feature_map.sequences]
        self.num_fields = feature_map.num_fields - self.n_dense  # fields in forward's [B, F, D]
        self.embedding_dim, self.linear_dim = embedding_dim, linear_dim
        self.flat_dim = self.num_fields * embedding_dim + self.n_dense
        self._rows: list[Tensor] = []
        self.reset_parameters(init_std)

    def reset_parameters(self, std: float) -> None:
        for p in self.parameters():
            nn.init.normal_(p, std=std)
        with torch.no_grad():
            for table in self.sequences:
                table.weight[0].zero_()

    def forward(self, batch: Batch) -> Tensor:
        g = self._gather(batch)
        return g[..., : self.embedding_dim] if self.linear_dim else g

    def with_first_order(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """(the fields [B, F, D], the first-order term without bias [B, C]) from one gather."""
        g = self._gather(batch)
        first = g[..., self.embedding_dim :].sum(1)
        if self.numeric_linear is not None:
            first = first + batch.num.to(first.dtype) @ self.numeric_linear.to(first.dtype)
        return g[..., : self.embedding_dim], first

    def _gather(self, batch: Batch) -> Tensor:
        parts: list[Tensor] = []
        rows: list[Tensor] = []
        if self.table is not None:
            ids = batch.cat + self.offsets
            if self.table.sparse:
                e = self.table(ids)
                rows.append(e)
            else:  # index_select's backward (index_add) is 2x faster on CPU than F.embedding's (sort + scan)
                e = self.table.weight.index_select(0, ids.reshape(-1)).view(*ids.shape, -1)
            parts.append(e)
        if self.numeric is not None:
            parts.append(batch.num.unsqueeze(-1) * self.numeric)
        for name, t in zip(self.seq_names, self.seq_table):
            ids = batch.seq[name]
            e = self._lookup(ids, t)  # padding rows are zero, so a plain sum skips them
            count = (ids != 0).sum(1, keepdim=True).clamp(min=1).to(e.dtype)
            parts.append((e.sum(1) / count).unsqueeze(1))
            if (self.sequences[t] if t >= 0 else self.table).sparse:
                rows.append(e)
        self._rows = rows if torch.is_grad_enabled() else []
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)  # one part: no copy

    def _lookup(self, ids: Tensor, t: int) -> Tensor:
        """[B, L, width] rows of sequence ids from table t (see `seq_table`); padding (0) is zero."""
        if t >= 0:
            return self.sequences[t](ids)
        e = self.table(ids + self.offsets[-1 - t])  # the categorical table has no padding row
        return e * (ids != 0).unsqueeze(-1).to(e.dtype)

    def tokens(self, batch: Batch, name: str) -> tuple[Tensor, Tensor]:
        """Sequence field `name` in order, for text encoders: token embeddings [B, L, D] (the
        same table the pooled field uses) and the mask of real tokens [B, L] (padding is id 0)."""
        ids = batch.seq[name]
        e = self._lookup(ids, self.seq_table[self.seq_names.index(name)])
        return (e[..., : self.embedding_dim] if self.linear_dim else e), ids != 0

    def with_dense(self, x: Tensor, batch: Batch) -> Tensor:
        """x [B, K] with the raw numeric values appended when numeric="dense" (else x itself)."""
        return torch.cat([x, batch.num.to(x.dtype)], dim=1) if self.n_dense else x

    def flat(self, e: Tensor, batch: Batch) -> Tensor:
        """The DNN input [B, flat_dim]: forward's fields flattened, plus dense numerics if any."""
        return self.with_dense(e.flatten(1), batch)

    def l2_parameters(self) -> list[nn.Parameter]:
        """The dense tensors that an L2 penalty covers whole: dense tables, numeric vectors."""
        tables = ([self.table] if self.table is not None else []) + list(self.sequences)
        return [t.weight for t in tables if not t.sparse] + \
            [p for p in (self.numeric, self.numeric_linear) if p is not None]

    def last_rows_l2(self) -> Tensor:
        """Sum of squares of the sparse-table rows the last forward gathered, over its batch size."""
        if not self._rows:
            return torch.zeros((), device=self.offsets.device)
        total = sum((r * r).sum() for r in self._rows)
        return total / self._rows[0].shape[0]

    def __getstate__(self) -> dict[str, Any]:
        # Cached activations are not state: drop them so deepcopy / pickle always work.
        state = self.__dict__.copy()
        state["_rows"] = []
        return state


class LinearTerm(nn.Module):
    """First-order term w0 + sum_f w_f(x_f): a FeatureEmbedding of width C (one weight per class)."""

    def __init__(self, feature_map: FeatureMap, output_dim: int = 1, sparse: bool = False) -> None:
        super().__init__()
        self.weights = FeatureEmbedding(feature_map, output_dim, sparse=sparse, init_std=1e-4)
        self.bias = nn.Parameter(torch.zeros(output_dim))

    def per_field(self, batch: Batch) -> Tensor:
        """[B, F, C]: each field's contribution (LR shows these as its hidden representation)."""
        return self.weights(batch)

    def forward(self, batch: Batch) -> Tensor:
        return self.per_field(batch).sum(1) + self.bias


class SharedFields(nn.Module):
    """A model's embedding when its field vectors are another model's (co-training with
    `share_embedding`) while its first-order weights stay its own: the shared table has no
    columns for them, and the student that owns it does not learn them."""

    def __init__(self, shared: FeatureEmbedding, feature_map: FeatureMap, linear_dim: int, sparse: bool) -> None:
        super().__init__()
        self.shared = shared
        self.first = FeatureEmbedding(feature_map, linear_dim, sparse=sparse)  # value * w_j for numerics
        self.num_fields, self.embedding_dim, self.linear_dim = shared.num_fields, shared.embedding_dim, linear_dim
        self.n_dense, self.flat_dim = shared.n_dense, shared.flat_dim

    def forward(self, batch: Batch) -> Tensor:
        return self.shared(batch)

    def with_first_order(self, batch: Batch) -> tuple[Tensor, Tensor]:
        return self.shared(batch), self.first(batch).sum(1)

    def with_dense(self, x: Tensor, batch: Batch) -> Tensor:
        return self.shared.with_dense(x, batch)

    def flat(self, e: Tensor, batch: Batch) -> Tensor:
        return self.shared.flat(e, batch)
