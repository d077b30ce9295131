"""DNN: the student. Field embeddings concatenated, an MLP, a linear output layer.

Plain and fast to serve, which is why distillation targets it.
"""

from __future__ import annotations

from typing import Sequence

from torch import nn

from mtkd.data.batch import Batch
from mtkd.data.feature_map import FeatureMap
from mtkd.models.base import CTRModel, ModelOutput
from mtkd.models.embedding import FeatureEmbedding
from mtkd.models.layers import MLP
from mtkd.models.registry import register_model


@register_model("dnn")
class DNN(CTRModel):
    """hidden: the MLP's last hidden layer."""

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 16,
        hidden_units: Sequence[int] = (64, 64, 64),
        dropout: float = 0.0,
        batch_norm: bool = False,
        embedding_regularizer: float = 0.0,
        sparse: bool = False,
        numeric_input: str = "embed",
    ) -> None:
        super().__init__(feature_map, embedding_regularizer)
        self.embedding = FeatureEmbedding(feature_map, embedding_dim, sparse=sparse, numeric=numeric_input)
        self.mlp = MLP(self.embedding.flat_dim, hidden_units, dropout, batch_norm)
        self.out = nn.Linear(self.mlp.output_dim, self.output_dim)
        self.hidden_dim = self.mlp.output_dim

    def forward(self, batch: Batch) -> ModelOutput:
        hidden = self.mlp(self.embedding.flat(self.embedding(batch), batch))
        return self.make_output(self.out(hidden), hidden)
