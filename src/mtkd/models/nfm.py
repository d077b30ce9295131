"""NFM (He & Chua, 2017): linear term + a DNN on the bi-interaction pooling of the embeddings."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from mtkd.data.batch import Batch
from mtkd.data.feature_map import FeatureMap
from mtkd.models.base import CTRModel, ModelOutput
from mtkd.models.embedding import FeatureEmbedding, NumericInput
from mtkd.models.layers import MLP, BiInteraction
from mtkd.models.registry import register_model


@register_model("nfm")
class NFM(CTRModel):
    """hidden: [first-order logits (C), DNN last hidden layer (the bi-interaction vector if no layers)].

    One hidden layer of 64 by default: the paper found NFM-1 best (the authors' `--layers [64]`).
    `batch_norm` also applies to the bi-interaction vector, as the paper does; so does `dropout`
    unless `bi_dropout` gives that vector its own rate (the authors': 0.5 there, 0.2 after the
    hidden layer).
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 16,
        hidden_units: Sequence[int] = (64,),
        dropout: float = 0.0,
        batch_norm: bool = False,
        embedding_regularizer: float = 0.0,
        sparse: bool = False,
        numeric_input: NumericInput = "embed",
        bi_dropout: Optional[float] = None,
    ) -> None:
        super().__init__(feature_map, embedding_regularizer)
        self.embedding = FeatureEmbedding(feature_map, embedding_dim, sparse=sparse, numeric=numeric_input,
                                          linear_dim=self.output_dim)
        self.linear_bias = nn.Parameter(torch.zeros(self.output_dim))
        bi_post: list[nn.Module] = [BiInteraction()]
        if batch_norm:
            bi_post.append(nn.BatchNorm1d(embedding_dim))
        if (rate := dropout if bi_dropout is None else bi_dropout) > 0:
            bi_post.append(nn.Dropout(rate))
        self.bi = nn.Sequential(*bi_post)
        self.mlp = MLP(embedding_dim + self.embedding.n_dense, hidden_units, dropout, batch_norm)
        self.out = nn.Linear(self.mlp.output_dim, self.output_dim)
        self.hidden_dim = self.output_dim + self.mlp.output_dim

    def forward(self, batch: Batch) -> ModelOutput:
        e, first = self.embedding.with_first_order(batch)
        first = first + self.linear_bias
        deep = self.mlp(self.embedding.with_dense(self.bi(e), batch))
        return self.make_output(first + self.out(deep), torch.cat([first, deep], dim=1))
