"""xDeepFM (Lian et al., 2018): linear term + compressed interaction network (CIN) + DNN."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mtkd.data.batch import Batch
from mtkd.data.feature_map import FeatureMap
from mtkd.models.base import CTRModel, ModelOutput
from mtkd.models.embedding import FeatureEmbedding, NumericInput
from mtkd.models.layers import CIN, MLP
from mtkd.models.registry import register_model


@register_model("xdeepfm")
class XDeepFM(CTRModel):
    """hidden: [first-order logits (C), CIN pooled maps, DNN last hidden layer].

    CIN 16-16-16 by default (FuxiCTR's; DeepCTR-Torch's is 256-128), linear as in the paper's
    Eq. 6 (DeepCTR's default adds a ReLU); the paper tuned the CIN's depth and width per dataset,
    with far wider layers (a few hundred maps)."""

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 16,
        cin_layer_units: Sequence[int] = (16, 16, 16),
        split_half: bool = True,
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
        self.cin = CIN(self.embedding.num_fields, cin_layer_units, split_half)
        self.mlp = MLP(self.embedding.flat_dim, hidden_units, dropout, batch_norm)
        self.out = nn.Linear(self.cin.output_dim + self.mlp.output_dim, self.output_dim)
        self.hidden_dim = self.output_dim + self.cin.output_dim + self.mlp.output_dim

    def forward(self, batch: Batch) -> ModelOutput:
        e, first = self.embedding.with_first_order(batch)
        first = first + self.linear_bias
        deep = torch.cat([self.cin(e), self.mlp(self.embedding.flat(e, batch))], dim=1)
        return self.make_output(first + self.out(deep), torch.cat([first, deep], dim=1))
