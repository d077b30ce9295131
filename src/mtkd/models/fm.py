"""FM (Rendle, 2010): first-order term plus all pairwise interactions <v_i, v_j>."""

from __future__ import annotations

import torch
from torch import nn

from mtkd.data.batch import Batch
from mtkd.data.feature_map import FeatureMap
from mtkd.models.base import CTRModel, ModelOutput
from mtkd.models.layers import FM as FMLayer
from mtkd.models.embedding import FeatureEmbedding
from mtkd.models.registry import register_model


@register_model("fm")
class FM(CTRModel):
    """hidden: [first-order logits (C), bi-interaction vector (D)]; logits = first + FM head(bi)."""

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 16,
        embedding_regularizer: float = 0.0,
        sparse: bool = False,
    ) -> None:
        super().__init__(feature_map, embedding_regularizer)
        self.embedding = FeatureEmbedding(feature_map, embedding_dim, sparse=sparse, linear_dim=self.output_dim)
        self.linear_bias = nn.Parameter(torch.zeros(self.output_dim))
        self.fm = FMLayer(embedding_dim, self.output_dim)
        self.hidden_dim = self.output_dim + embedding_dim

    def forward(self, batch: Batch) -> ModelOutput:
        e, first = self.embedding.with_first_order(batch)
        first = first + self.linear_bias
        bi = self.fm.bi(e)
        return self.make_output(first + self.fm.head(bi), torch.cat([first, bi], dim=1))
