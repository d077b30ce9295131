"""IPNN (Qu et al., 2016): field embeddings plus their pairwise inner products, then a DNN."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mtkd.data.batch import Batch
from mtkd.data.feature_map import FeatureMap
from mtkd.models.base import CTRModel, ModelOutput
from mtkd.models.embedding import FeatureEmbedding, NumericInput
from mtkd.models.layers import MLP, InnerProduct
from mtkd.models.registry import register_model


@register_model("ipnn")
class IPNN(CTRModel):
    """hidden: the DNN's last hidden layer (its input is [flat embeddings, inner products])."""

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
        self.embedding = FeatureEmbedding(feature_map, embedding_dim, sparse=sparse, numeric=numeric_input)
        self.product = InnerProduct(self.embedding.num_fields)
        self.mlp = MLP(self.embedding.flat_dim + self.product.output_dim, hidden_units, dropout, batch_norm)
        self.out = nn.Linear(self.mlp.output_dim, self.output_dim)
        self.hidden_dim = self.mlp.output_dim

    def forward(self, batch: Batch) -> ModelOutput:
        e = self.embedding(batch)
        hidden = self.mlp(torch.cat([self.embedding.flat(e, batch), self.product(e)], dim=1))
        return self.make_output(self.out(hidden), hidden)
