"""DeepFM (Guo et al., 2017): FM and a DNN sharing one embedding, outputs summed."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mtkd.data.batch import Batch
from mtkd.data.feature_map import FeatureMap
from mtkd.models.base import CTRModel, ModelOutput
from mtkd.models.embedding import FeatureEmbedding, NumericInput
from mtkd.models.layers import FM, MLP
from mtkd.models.registry import register_model


@register_model("deepfm")
class DeepFM(CTRModel):
    """hidden: [first-order logits (C), bi-interaction vector (D), DNN last hidden layer]."""

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
        self.fm = FM(embedding_dim, self.output_dim)
        self.mlp = MLP(self.embedding.flat_dim, hidden_units, dropout, batch_norm)
        self.out = nn.Linear(self.mlp.output_dim, self.output_dim)
        self.hidden_dim = self.output_dim + embedding_dim + self.mlp.output_dim

    def forward(self, batch: Batch) -> ModelOutput:
        e, first = self.embedding.with_first_order(batch)
        first = first + self.linear_bias
        bi, deep = self.fm.bi(e), self.mlp(self.embedding.flat(e, batch))
        logits = first + self.fm.head(bi) + self.out(deep)
        return self.make_output(logits, torch.cat([first, bi, deep], dim=1))
