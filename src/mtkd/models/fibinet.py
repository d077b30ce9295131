"""FiBiNET (Huang et al., 2019): SENET field importance + bilinear interactions, then a DNN."""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import nn

from mtkd.data.batch import Batch
from mtkd.data.feature_map import FeatureMap
from mtkd.models.base import CTRModel, ModelOutput
from mtkd.models.embedding import FeatureEmbedding, NumericInput
from mtkd.models.layers import MLP, Bilinear, SENet
from mtkd.models.registry import register_model


@register_model("fibinet")
class FiBiNET(CTRModel):
    """hidden: [first-order logits (C), DNN last hidden layer]; the paper's output adds a linear part.

    Bilinear interactions of the raw embeddings (p) and of the SENET-reweighted ones (q) are
    concatenated and fed to the DNN. Each bilinear layer has its own weights, as in the paper.
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 16,
        reduction_ratio: float = 3.0,
        bilinear_type: Literal["field_all", "field_each", "field_interaction"] = "field_interaction",
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
        num_fields = self.embedding.num_fields
        self.senet = SENet(num_fields, reduction_ratio)
        self.bilinear = Bilinear(num_fields, embedding_dim, bilinear_type)
        self.bilinear_se = Bilinear(num_fields, embedding_dim, bilinear_type)
        self.mlp = MLP(2 * self.bilinear.num_pairs * embedding_dim + self.embedding.n_dense, hidden_units, dropout, batch_norm)
        self.out = nn.Linear(self.mlp.output_dim, self.output_dim)
        self.hidden_dim = self.output_dim + self.mlp.output_dim

    def forward(self, batch: Batch) -> ModelOutput:
        e, first = self.embedding.with_first_order(batch)
        p, q = self.bilinear(e), self.bilinear_se(self.senet(e))
        deep = self.mlp(self.embedding.with_dense(torch.cat([p, q], dim=1).flatten(1), batch))
        first = first + self.linear_bias
        return self.make_output(first + self.out(deep), torch.cat([first, deep], dim=1))
