"""Wide & Deep (Cheng et al., 2016): a linear (wide) part plus a DNN (deep) part, trained jointly."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mtkd.data.batch import Batch
from mtkd.data.feature_map import FeatureMap
from mtkd.models.base import CTRModel, ModelOutput
from mtkd.models.embedding import FeatureEmbedding, NumericInput
from mtkd.models.layers import MLP
from mtkd.models.registry import register_model


@register_model("wide_deep")
class WideDeep(CTRModel):
    """hidden: [wide logits (C), DNN last hidden layer]; logits = wide + Linear(deep)."""

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 16,
        hidden_units: Sequence[int] = (64, 64, 64),
        dropout: float = 0.0,
        batch_norm: bool = False,
        embedding_regularizer: float = 0.0,
        sparse: bool = False,
        numeric_input: NumericInput = "embed",
    ) -> None:
        super().__init__(feature_map, embedding_regularizer)
        self.embedding = FeatureEmbedding(feature_map, embedding_dim, sparse=sparse, numeric=numeric_input,
                                          linear_dim=self.output_dim)
        self.linear_bias = nn.Parameter(torch.zeros(self.output_dim))
        self.mlp = MLP(self.embedding.flat_dim, hidden_units, dropout, batch_norm)
        self.out = nn.Linear(self.mlp.output_dim, self.output_dim)
        self.hidden_dim = self.output_dim + self.mlp.output_dim

    def forward(self, batch: Batch) -> ModelOutput:
        e, wide = self.embedding.with_first_order(batch)
        wide = wide + self.linear_bias
        deep = self.mlp(self.embedding.flat(e, batch))
        return self.make_output(wide + self.out(deep), torch.cat([wide, deep], dim=1))
