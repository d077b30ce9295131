"""DCN-V2 (Wang et al., 2021): full-rank (or, DCN-Mix, a low-rank mixture of experts) cross layers,
combined with a DNN in parallel or stacked."""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import nn

from mtkd.data.batch import Batch
from mtkd.data.feature_map import FeatureMap
from mtkd.models.base import CTRModel, ModelOutput
from mtkd.models.embedding import FeatureEmbedding, NumericInput
from mtkd.models.layers import MLP, CrossNetMix, CrossNetV2
from mtkd.models.registry import register_model

@register_model("dcnv2")
class DCNv2(CTRModel):
    """hidden: parallel -> [cross output, DNN last hidden]; stacked -> DNN(cross); crossnet_only -> cross.

    `low_rank: r` (0 = full rank, the default) makes each cross layer the paper's DCN-Mix:
    `num_experts` low-rank experts (U, V of d x r, C of r x r, tanh between) mixed by a softmax
    gate. FuxiCTR's and DeepCTR-Torch's DCN-Mix default to r = 32 and 4 experts. Defaults of the
    rest: 3 cross layers and the parallel structure (FuxiCTR's; the paper tunes 1-4 layers)."""

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 16,
        num_cross_layers: int = 3,
        structure: Literal["parallel", "stacked", "crossnet_only"] = "parallel",
        low_rank: int = 0,
        num_experts: int = 4,
        hidden_units: Sequence[int] = (64, 64, 64),
        dropout: float = 0.0,
        batch_norm: bool = False,
        embedding_regularizer: float = 0.0,
        sparse: bool = False,
        numeric_input: NumericInput = "embed",
    ) -> None:
        super().__init__(feature_map, embedding_regularizer)
        self.structure = structure
        self.embedding = FeatureEmbedding(feature_map, embedding_dim, sparse=sparse, numeric=numeric_input)
        input_dim = self.embedding.flat_dim
        self.cross = CrossNetV2(input_dim, num_cross_layers) if not low_rank else \
            CrossNetMix(input_dim, num_cross_layers, low_rank, num_experts)
        self.mlp = None if structure == "crossnet_only" else MLP(input_dim, hidden_units, dropout, batch_norm)
        mlp_dim = self.mlp.output_dim if self.mlp is not None else 0
        self.hidden_dim = {"parallel": input_dim + mlp_dim, "stacked": mlp_dim, "crossnet_only": input_dim}[structure]
        self.out = nn.Linear(self.hidden_dim, self.output_dim)

    def forward(self, batch: Batch) -> ModelOutput:
        x0 = self.embedding.flat(self.embedding(batch), batch)
        cross = self.cross(x0)
        if self.structure == "parallel":
            hidden = torch.cat([cross, self.mlp(x0)], dim=1)
        elif self.structure == "stacked":
            hidden = self.mlp(cross)
        else:
            hidden = cross
        return self.make_output(self.out(hidden), hidden)
