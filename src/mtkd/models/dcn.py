"""DCN (Wang et al., 2017): a cross network and a DNN side by side on the flat embedding."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mtkd.data.batch import Batch
from mtkd.data.feature_map import FeatureMap
from mtkd.models.base import CTRModel, ModelOutput
from mtkd.models.embedding import FeatureEmbedding, NumericInput
from mtkd.models.layers import MLP, CrossNet
from mtkd.models.registry import register_model


@register_model("dcn")
class DCN(CTRModel):
    """hidden: [cross network output (F*D), DNN last hidden layer], fed to one Linear (the paper's stack).

    3 cross layers by default (FuxiCTR's; DeepCTR-Torch's is 2); the paper tuned them per dataset
    (its best on Criteo: 6 cross layers beside 2 deep layers of 1024)."""

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 16,
        num_cross_layers: int = 3,
        hidden_units: Sequence[int] = (64, 64, 64),
        dropout: float = 0.0,
        batch_norm: bool = False,
        embedding_regularizer: float = 0.0,
        sparse: bool = False,
        numeric_input: NumericInput = "embed",
    ) -> None:
        super().__init__(feature_map, embedding_regularizer)
        self.embedding = FeatureEmbedding(feature_map, embedding_dim, sparse=sparse, numeric=numeric_input)
        input_dim = self.embedding.flat_dim
        self.cross = CrossNet(input_dim, num_cross_layers)
        self.mlp = MLP(input_dim, hidden_units, dropout, batch_norm) if hidden_units else None
        self.hidden_dim = input_dim + (self.mlp.output_dim if self.mlp is not None else 0)
        self.out = nn.Linear(self.hidden_dim, self.output_dim)

    def forward(self, batch: Batch) -> ModelOutput:
        x0 = self.embedding.flat(self.embedding(batch), batch)
        parts = [self.cross(x0)] + ([self.mlp(x0)] if self.mlp is not None else [])
        hidden = torch.cat(parts, dim=1)
        return self.make_output(self.out(hidden), hidden)
