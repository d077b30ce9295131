"""AutoInt (Song et al., 2019): stacked multi-head self-attention over fields; AutoInt+ adds a DNN."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from mtkd.data.batch import Batch
from mtkd.data.feature_map import FeatureMap
from mtkd.models.base import CTRModel, ModelOutput
from mtkd.models.embedding import FeatureEmbedding, NumericInput
from mtkd.models.layers import MLP, SelfAttention
from mtkd.models.registry import register_model


@register_model("autoint")
class AutoInt(CTRModel):
    """hidden: [first-order logits (C) if use_wide, flattened attention output (F * heads *
    attention_dim), DNN last hidden if use_dnn].

    Defaults follow the paper: 3 interacting layers, 2 heads, 32 dims per head, residuals.
    `attention_dim` is per head (FuxiCTR's parameter of that name is the total over heads: its 64
    with 2 heads is this 32).
    `use_wide` adds a first-order (logistic regression) term, as FuxiCTR's and DeepCTR-Torch's
    AutoInt do: without it every first-order effect must pass through the attention stack.
    `layer_norm` normalises each interacting layer's output before its ReLU (FuxiCTR's option).
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 16,
        attention_layers: int = 3,
        num_heads: int = 2,
        attention_dim: int = 32,
        use_residual: bool = True,
        use_scale: bool = False,
        use_dnn: bool = False,
        use_wide: bool = False,
        layer_norm: bool = False,
        hidden_units: Sequence[int] = (64, 64, 64),
        dropout: float = 0.0,
        batch_norm: bool = False,
        embedding_regularizer: float = 0.0,
        sparse: bool = False,
        numeric_input: NumericInput = "embed",
    ) -> None:
        super().__init__(feature_map, embedding_regularizer)
        self.embedding = FeatureEmbedding(feature_map, embedding_dim, sparse=sparse, numeric=numeric_input,
                                          linear_dim=self.output_dim if use_wide else 0)
        self.linear_bias = nn.Parameter(torch.zeros(self.output_dim)) if use_wide else None
        num_fields = self.embedding.num_fields
        layers, dim = [], embedding_dim
        for _ in range(attention_layers):
            layers.append(SelfAttention(dim, attention_dim, num_heads, use_residual, use_scale, layer_norm))
            dim = layers[-1].output_dim
        self.attention = nn.Sequential(*layers)
        self.mlp = MLP(self.embedding.flat_dim, hidden_units, dropout, batch_norm) if use_dnn else None
        # without the DNN, dense numerics (numeric_input=dense) reach the output layer directly,
        # unless use_wide already gives them their first-order weight (a second would be redundant)
        self.dense_to_out = self.mlp is None and not use_wide
        out_in = num_fields * dim + (self.mlp.output_dim if self.mlp is not None else
                                     self.embedding.n_dense if self.dense_to_out else 0)
        self.out = nn.Linear(out_in, self.output_dim)
        self.hidden_dim = out_in + (self.output_dim if use_wide else 0)

    def forward(self, batch: Batch) -> ModelOutput:
        if self.linear_bias is not None:
            e, first = self.embedding.with_first_order(batch)
            first = first + self.linear_bias
        else:
            e, first = self.embedding(batch), None
        parts = [self.attention(e).flatten(1)]
        if self.mlp is not None:
            parts.append(self.mlp(self.embedding.flat(e, batch)))
        deep = torch.cat(parts, dim=1)
        if self.dense_to_out:
            deep = self.embedding.with_dense(deep, batch)
        logits = self.out(deep)
        if first is None:
            return self.make_output(logits, deep)
        return self.make_output(logits + first, torch.cat([first, deep], dim=1))


@register_model("autoint_plus")
class AutoIntPlus(AutoInt):
    """AutoInt+: AutoInt with its DNN on by default (the paper's best variant)."""

    def __init__(self, feature_map: FeatureMap, use_dnn: bool = True, **params: Any) -> None:
        super().__init__(feature_map, use_dnn=use_dnn, **params)
