"""DNN: the student. Field embeddings concatenated, an MLP, a linear output layer.

Plain and fast to serve, which is why distillation targets it.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mtkd.data.batch import Batch
from mtkd.data.feature_map import FeatureMap
from mtkd.errors import ConfigError
from mtkd.models.base import CTRModel, ModelOutput
from mtkd.models.embedding import FeatureEmbedding, NumericInput
from mtkd.models.layers import MLP
from mtkd.models.registry import register_model


@register_model("dnn")
class DNN(CTRModel):
    """hidden: the MLP's last hidden layer.

    `pair_features: true` adds |u - v| and u * v for every two sequence fields that share a table
    (the pooled sentences of a pair), the matching features of GLUE's CBOW baseline: an MLP over
    [u, v] alone has to learn word overlap from a few thousand pairs."""

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
        pair_features: bool = False,
    ) -> None:
        super().__init__(feature_map, embedding_regularizer)
        self.embedding = FeatureEmbedding(feature_map, embedding_dim, sparse=sparse, numeric=numeric_input)
        self.pairs = shared_sequence_pairs(feature_map, self.embedding) if pair_features else []
        if pair_features and not self.pairs:
            raise ConfigError("pair_features needs two sequence fields that share a table (`share_embedding`)")
        self.mlp = MLP(self.embedding.flat_dim + 2 * embedding_dim * len(self.pairs), hidden_units, dropout, batch_norm)
        self.out = nn.Linear(self.mlp.output_dim, self.output_dim)
        self.hidden_dim = self.mlp.output_dim

    def forward(self, batch: Batch) -> ModelOutput:
        e = self.embedding(batch)
        x = self.embedding.flat(e, batch)
        if self.pairs:
            match = [t for i, j in self.pairs for t in ((e[:, i] - e[:, j]).abs(), e[:, i] * e[:, j])]
            x = torch.cat([x, *match], dim=1)
        hidden = self.mlp(x)
        return self.make_output(self.out(hidden), hidden)


def shared_sequence_pairs(feature_map: FeatureMap, embedding: FeatureEmbedding) -> list[tuple[int, int]]:
    """(owner, sharer) positions in the embedding's [B, F, D] of sequence fields sharing a table."""
    first = embedding.num_fields - len(feature_map.sequences)  # sequences come last
    names = [s.name for s in feature_map.sequences]
    return [(first + names.index(s.share), first + k) for k, s in enumerate(feature_map.sequences)
            if s.share in names]
