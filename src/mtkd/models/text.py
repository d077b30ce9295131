"""Text encoders that read a sequence field in order: TextCNN (Kim, 2014) and a small
Transformer encoder. They are the teachers of text classification; the student is the DNN,
which sees the same field as a mean-pooled bag of words.

Both embed every field as the other models do (so a sentence column next to categorical
columns works) and add the encoded text to the DNN input; the token embeddings come from the
same table as the pooled field. Embeddings start at std 0.1, not the CTR models' 1e-4: a
convolution or attention over near-zero vectors has near-zero gradients (the AutoInt lesson).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from mtkd.data.batch import Batch
from mtkd.data.feature_map import FeatureMap
from mtkd.errors import ConfigError
from mtkd.models.base import CTRModel, ModelOutput
from mtkd.models.embedding import FeatureEmbedding
from mtkd.models.layers import MLP, trim_padding
from mtkd.models.registry import register_model


class _TextModel(CTRModel):
    """The shared frame: fields embedded, the text fields encoded, both into an MLP."""

    def __init__(self, feature_map: FeatureMap, text_fields: str | Sequence[str] | None, embedding_dim: int,
                 dropout: float, embedding_regularizer: float, embedding_init_std: float):
        super().__init__(feature_map, embedding_regularizer)
        names = [s.name for s in feature_map.sequences]
        if not names:
            raise ConfigError(f"{type(self).__name__} reads a text (sequence) field in order, and the data has "
                              "none; declare the text column with `type: sequence` and `separator: \" \"`")
        fields = [text_fields] if isinstance(text_fields, str) else list(text_fields or names)
        wrong = [f for f in fields if f not in names]
        if wrong or not fields:
            raise ConfigError(f"text_fields {wrong or fields} are not sequence fields; the data has {names}")
        self.text_fields = fields
        self.embedding = FeatureEmbedding(feature_map, embedding_dim, init_std=embedding_init_std)
        self.drop = nn.Dropout(dropout)
        self.dropout = dropout

    def _head(self, encoded_dim: int, hidden_units: Sequence[int]) -> None:
        self.mlp = MLP(self.embedding.flat_dim + encoded_dim, hidden_units, self.dropout)
        self.out = nn.Linear(self.mlp.output_dim, self.output_dim)
        self.hidden_dim = self.mlp.output_dim

    def encode(self, texts: list[tuple[Tensor, Tensor]]) -> Tensor:
        """[B, encoded_dim] from each text field's (token embeddings [B, L, D], mask [B, L])."""
        raise NotImplementedError

    def forward(self, batch: Batch) -> ModelOutput:
        fields = self.embedding.flat(self.embedding(batch), batch)
        text = self.drop(self.encode([self.embedding.tokens(batch, f) for f in self.text_fields]))
        hidden = self.mlp(torch.cat([fields, text], dim=1))
        return self.make_output(self.out(hidden), hidden)


@register_model("text_cnn")
class TextCNN(_TextModel):
    """Kim's CNN: convolutions of widths 3, 4, 5 (100 filters each) over the token embeddings,
    ReLU, max over positions, dropout 0.5; then, with the other fields, one hidden layer of 64
    (`hidden_units: []` is Kim's linear output). hidden: the MLP's last layer.

    Several text fields go through the same convolutions; a pair (u, v), as in paraphrase or
    entailment, is matched as [u, v, |u - v|, u * v] (InferSent), more fields are concatenated."""

    def __init__(self, feature_map: FeatureMap, text_fields: str | Sequence[str] | None = None, embedding_dim: int = 64,
                 kernel_sizes: Sequence[int] = (3, 4, 5), filters: int = 100, hidden_units: Sequence[int] = (64,),
                 dropout: float = 0.5, embedding_regularizer: float = 0.0, embedding_init_std: float = 0.1) -> None:
        super().__init__(feature_map, text_fields, embedding_dim, dropout, embedding_regularizer, embedding_init_std)
        # full convolutions (padding k - 1): a sentence shorter than a kernel still has windows
        self.convs = nn.ModuleList(nn.Conv1d(embedding_dim, filters, int(k), padding=int(k) - 1) for k in kernel_sizes)
        width, k = filters * len(self.convs), len(self.text_fields)
        self._head(width * (4 if k == 2 else k), hidden_units)

    def encode(self, texts: list[tuple[Tensor, Tensor]]) -> Tensor:
        enc = [self._one(*trim_padding(tokens, mask)) for tokens, mask in texts]
        if len(enc) == 2:
            u, v = enc
            return torch.cat([u, v, (u - v).abs(), u * v], dim=1)
        return torch.cat(enc, dim=1)

    def _one(self, tokens: Tensor, mask: Tensor) -> Tensor:
        x = tokens.transpose(1, 2)  # [B, D, L]; padding rows are zero vectors
        length = mask.sum(1, keepdim=True)
        out = []
        for conv in self.convs:
            y = conv(x)  # [B, filters, L + k - 1]: window j covers tokens j - k + 1 .. j
            # max over the windows that hold a real token: padding never wins, so the
            # result does not depend on how many padding slots the batch carries
            real = torch.arange(y.shape[2], device=y.device) < length + conv.kernel_size[0] - 1
            y = y.masked_fill(~(real & (length > 0)).unsqueeze(1), float("-inf"))
            out.append(torch.relu(y.amax(dim=2)))  # relu after the max: the same, once
        return torch.cat(out, dim=1)


@register_model("text_transformer")
class TextTransformer(_TextModel):
    """A small Transformer encoder (pre-norm, learned positions) over the tokens, mean-pooled
    over the real tokens. Defaults: 2 layers, 4 heads, width 64, feed-forward 256, dropout 0.1, a
    hidden layer of 64 over the encoding and the other fields (hidden: its output).

    Several text fields are read jointly, as BERT reads a sentence pair: one sequence of the
    fields one after another, positions counted within each field, a learned segment vector
    per field, so attention runs across the two sentences."""

    def __init__(self, feature_map: FeatureMap, text_fields: str | Sequence[str] | None = None, embedding_dim: int = 64,
                 layers: int = 2, heads: int = 4, feedforward: int = 256, hidden_units: Sequence[int] = (64,),
                 dropout: float = 0.1, embedding_regularizer: float = 0.0, embedding_init_std: float = 0.1) -> None:
        super().__init__(feature_map, text_fields, embedding_dim, dropout, embedding_regularizer, embedding_init_std)
        if embedding_dim % heads:
            raise ConfigError(f"embedding_dim {embedding_dim} must be a multiple of heads {heads}")
        max_len = max(s.max_len for s in feature_map.sequences if s.name in self.text_fields)
        # learned positions at the scale of the scaled tokens (std 0.5 against 0.8): started at
        # BERT's 0.02 they stayed invisible, and the model missed which word precedes which
        self.position = nn.Parameter(torch.randn(max_len, embedding_dim) * 0.5)
        k = len(self.text_fields)
        self.segment = nn.Parameter(torch.randn(k, embedding_dim) * 0.5) if k > 1 else None
        layer = nn.TransformerEncoderLayer(embedding_dim, heads, feedforward, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(embedding_dim)
        self.scale = math.sqrt(embedding_dim)
        self._head(embedding_dim, hidden_units)

    def encode(self, texts: list[tuple[Tensor, Tensor]]) -> Tensor:
        xs, masks = [], []
        for i, (tokens, mask) in enumerate(texts):
            tokens, mask = trim_padding(tokens, mask)
            x = tokens * self.scale + self.position[: tokens.shape[1]]
            xs.append(x if self.segment is None else x + self.segment[i])
            masks.append(mask)
        x, mask = torch.cat(xs, dim=1), torch.cat(masks, dim=1)
        mask = mask.clone()
        mask[:, 0] |= ~mask.any(dim=1)  # an empty text attends to its first (padding) slot, not to nothing
        h = self.norm(self.encoder(x, src_key_padding_mask=~mask))
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1)
