"""LR: logistic (softmax for multi-class) regression on one-hot ids and raw numerics."""

from __future__ import annotations

from mtkd.data.batch import Batch
from mtkd.data.feature_map import FeatureMap
from mtkd.models.base import CTRModel, ModelOutput
from mtkd.models.embedding import LinearTerm
from mtkd.models.registry import register_model


@register_model("lr")
class LR(CTRModel):
    """hidden: each field's contribution to the logits, [B, F * C]; logits = their sum + bias."""

    def __init__(self, feature_map: FeatureMap, embedding_regularizer: float = 0.0, sparse: bool = False) -> None:
        super().__init__(feature_map, embedding_regularizer)
        self.linear = LinearTerm(feature_map, self.output_dim, sparse=sparse)
        self.hidden_dim = feature_map.num_fields * self.output_dim

    def forward(self, batch: Batch) -> ModelOutput:
        parts = self.linear.per_field(batch)  # [B, F, C]
        logits = parts.sum(1) + self.linear.bias
        return self.make_output(logits, parts.flatten(1))
