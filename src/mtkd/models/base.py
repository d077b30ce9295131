"""The contract every CTR model keeps: a Batch in, `ModelOutput(logits, hidden)` out.

Distillation only ever sees this contract: logits for the KD losses, `hidden` for hint
losses and for the policy's state features. So every model exposes the same two tensors,
whatever its insides.
"""

from __future__ import annotations

from typing import Any, Iterator, NamedTuple

import torch
from torch import Tensor, nn

from mtkd.data.batch import Batch
from mtkd.data.feature_map import FeatureMap
from mtkd.errors import ConfigError
from mtkd.models.embedding import FeatureEmbedding


class ModelOutput(NamedTuple):
    """logits: [B] for binary tasks, [B, C] for multi-class ones.
    hidden: [B, H], what the final output layer sees (logits are an affine function of it).
    """

    logits: Tensor
    hidden: Tensor


class CTRModel(nn.Module):
    """Base of every model in the zoo; subclasses set `hidden_dim` and implement `forward`."""

    model_name: str = ""
    hidden_dim: int = 0

    def __init__(self, feature_map: FeatureMap, embedding_regularizer: float = 0.0) -> None:
        super().__init__()
        if feature_map.num_fields == 0:
            raise ConfigError("the feature map has no categorical, numeric or sequence field to model")
        if feature_map.task not in ("binary", "multiclass"):
            raise ConfigError(f"task must be 'binary' or 'multiclass', got {feature_map.task!r}")
        if embedding_regularizer < 0:
            raise ConfigError(f"embedding_regularizer must be >= 0, got {embedding_regularizer}")
        self.feature_map = feature_map
        self.embedding_regularizer = float(embedding_regularizer)
        self.output_dim = feature_map.output_dim

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # checkpoints written before the first-order weights became extra columns of the
        # embedding tables kept them in `linear.weights.*` tables of their own
        old = prefix + "linear.weights."
        emb = getattr(self, "embedding", None)
        if isinstance(emb, FeatureEmbedding) and emb.linear_dim and any(k.startswith(old) for k in state_dict):
            for key in [k for k in state_dict if k.startswith(old)]:
                new = prefix + "embedding." + key[len(old):]
                lin = state_dict.pop(key)
                if new in state_dict:
                    state_dict[new] = torch.cat([state_dict[new], lin], -1)
            if prefix + "linear.bias" in state_dict:
                state_dict[prefix + "linear_bias"] = state_dict.pop(prefix + "linear.bias")
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(self, batch: Batch) -> ModelOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def make_output(self, logits: Tensor, hidden: Tensor) -> ModelOutput:
        """Squeeze [B, 1] logits to [B] for binary tasks, so every loss sees one shape per task."""
        if self.output_dim == 1:
            logits = logits.squeeze(-1)
        return ModelOutput(logits, hidden)

    def output_bias(self) -> nn.Parameter | None:
        """The bias added straight to the logits (the output layer's, else the first-order term's)."""
        for name in ("out.bias", "linear_bias", "linear.bias"):
            try:
                p = self.get_parameter(name)
            except AttributeError:
                continue
            if p.shape == (self.output_dim,):
                return p
        return None

    @torch.no_grad()
    def init_output_prior(self, frequencies: Any, batch: Batch | None = None) -> bool:
        """Start the logits at the training labels' prior: log-odds of the positive rate (binary),
        centred log class frequencies (multi-class). A zero bias means p = 0.5 where CTR data has
        a few percent positives: the first steps of Adam (~lr per step) then go to moving the
        output to the base rate, and a small dataset's epochs run out before the model learns.
        With `batch` (training rows) the untrained model's own median logit on it is taken off
        (the MLP's and CIN's biases give it an offset: +0.6 for xDeepFM), so its predictions
        start at the prior. The median, not the mean: one unscaled outlier (a count of 1e12 under
        `transform: none`) moved the mean by orders of magnitude and every other row with it
        (valid logloss 76). Returns whether it was set (the model has such a bias, the
        frequencies are known)."""
        bias = self.output_bias()
        if bias is None or frequencies is None:
            return False
        f = torch.as_tensor(frequencies).double().clamp(1e-6, 1 - 1e-6)
        prior = torch.log(f[1] / (1 - f[1])).reshape(1) if self.output_dim == 1 else f.log() - f.log().mean()
        offset = torch.zeros_like(prior)
        if batch is not None:
            was_training = self.training
            self.eval()
            logits = self(batch).logits.double()
            self.train(was_training)
            logits = logits.masked_fill(~torch.isfinite(logits), float("nan"))
            mid = logits.reshape(logits.shape[0], -1).nanmedian(0).values.nan_to_num(0.0)
            offset = mid.reshape(1) - bias.double() if self.output_dim == 1 else \
                mid - mid.mean() - (bias.double() - bias.double().mean())
        bias.copy_((prior - offset).to(bias.dtype))
        return True

    def reg_loss(self) -> Tensor:
        """Coefficient * sum of squares of the sparse-table rows the last forward used, per row of batch.

        `embedding_regularizer` means lambda * sum ||W||^2 over the embedding tables (FuxiCTR's and
        DeepCTR-Torch's meaning). Dense tables get it exactly, through their gradients
        (`train.optimizers.EmbeddingL2`); a sparse table cannot without a dense gradient, so it
        is penalised on the rows a batch looks up, per occurrence, over the batch size: a row
        seen n times in a batch of B gets n/B of the dense table's pull (weaker for every id).
        """
        device = next(self.parameters()).device
        total = torch.zeros((), device=device)
        if self.embedding_regularizer == 0:
            return total
        for module in self.modules():
            if isinstance(module, FeatureEmbedding):
                total = total + module.last_rows_l2()
        return self.embedding_regularizer * total

    def l2_parameters(self) -> list[nn.Parameter]:
        """The dense embedding tensors that `embedding_regularizer` penalises whole."""
        return [p for m in self.modules() if isinstance(m, FeatureEmbedding) for p in m.l2_parameters()]

    def sparse_parameters(self) -> Iterator[nn.Parameter]:
        """Embedding tables (sparse gradients when built with `sparse=True`: SparseAdam / SGD)."""
        for module in self.modules():
            if isinstance(module, nn.Embedding):
                yield module.weight

    def dense_parameters(self) -> Iterator[nn.Parameter]:
        """Everything that is not an embedding table (Adam and friends)."""
        sparse = {id(p) for p in self.sparse_parameters()}
        for p in self.parameters():
            if id(p) not in sparse:
                yield p
