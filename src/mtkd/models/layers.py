"""Shared building blocks of the model zoo; model files only wire these together.

The field embeddings (FeatureEmbedding, first-order weights, SharedFields) have their own module,
`embedding.py`, and are re-exported here.

All layers take a field tensor [B, F, D] (or its flattening) and are vectorised over the
batch; the only Python loops are over layers.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtkd.errors import ConfigError
from mtkd.models.embedding import FeatureEmbedding, LinearTerm, SharedFields  # noqa: F401  (DESIGN: layers.py)

class Dice(nn.Module):
    """DIN's data-adaptive activation (Zhou et al. 2018, Eq. 9): f(s) = p(s) s + (1 - p(s)) alpha s,
    p(s) = sigmoid((s - E[s]) / sqrt(Var[s] + eps)): PReLU with its rectifying point following
    the data. E and Var are the batch's in training and running averages in eval mode (batch norm
    without its affine part, as the paper has none); alpha per unit, from 0. Over the last
    dimension of a 2-D or 3-D input (the activation unit scores [B, L, 4D])."""

    def __init__(self, dim: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim, eps=eps, affine=False)
        self.alpha = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        p = torch.sigmoid(self.bn(x.reshape(-1, x.shape[-1]))).reshape(x.shape)
        return p * x + (1 - p) * self.alpha * x


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "prelu": nn.PReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "dice": Dice,  # built with its width
}


class MLP(nn.Module):
    """Linear -> [BatchNorm] -> activation -> [Dropout] per hidden size; returns the last hidden layer."""

    def __init__(
        self,
        input_dim: int,
        hidden_units: Sequence[int],
        dropout: float = 0.0,
        batch_norm: bool = False,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {activation!r}; known: {', '.join(ACTIVATIONS)}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        layers: list[nn.Module] = []
        dim = input_dim
        for units in hidden_units:
            layers.append(nn.Linear(dim, int(units)))
            if batch_norm:
                layers.append(nn.BatchNorm1d(int(units)))
            layers.append(Dice(int(units)) if activation == "dice" else ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            dim = int(units)
        self.net = nn.Sequential(*layers)
        self.output_dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def trim_padding(tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """A sequence's ids come first, padding after: keep the batch's longest one, not max_len slots
    (SST-2 phrases average ~9 of 64). Exact for layers that ignore padding; skipped when tracing or
    exporting, where a data-dependent length would be frozen into the graph."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return tokens, mask
    longest = max(int(mask.sum(1).max()), 1)
    return tokens[:, :longest], mask[:, :longest]


class BiInteraction(nn.Module):
    """NFM's bi-interaction pooling: sum_{i<j} e_i * e_j as [B, D], in O(F D) via (sum^2 - sum of squares) / 2."""

    def forward(self, e: Tensor) -> Tensor:
        s = e.sum(dim=1)
        return 0.5 * (s * s - (e * e).sum(dim=1))


class FM(nn.Module):
    """FM second-order term [B, C]: the bi-interaction summed over D (classic FM) when C == 1;
    for C > 1 classes a bias-free Linear(D, C) of it, so FM-type models also do multi-class.
    """

    def __init__(self, embedding_dim: int, output_dim: int = 1) -> None:
        super().__init__()
        self.bi = BiInteraction()
        self.proj = None if output_dim == 1 else nn.Linear(embedding_dim, output_dim, bias=False)

    def head(self, bi: Tensor) -> Tensor:
        """Logits from an already computed bi-interaction vector."""
        return bi.sum(-1, keepdim=True) if self.proj is None else self.proj(bi)

    def forward(self, e: Tensor) -> Tensor:
        return self.head(self.bi(e))


class CrossNet(nn.Module):
    """DCN cross network: x_{l+1} = x_0 * (w_l . x_l) + b_l + x_l (a rank-one cross per layer).

    Every x_l is x_0 * c_l + B_l with a per-row scalar c_l and B_l = b_0 + ... + b_{l-1}, so
    w_l . x_l = c_l (w_l . x_0) + w_l . B_l: one [B, D] x [D, L] matmul for all layers and a
    scalar recurrence, instead of L passes over [B, D] (3x faster for 3 layers on CPU).
    """

    def __init__(self, input_dim: int, num_layers: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.empty(num_layers, input_dim))
        self.b = nn.Parameter(torch.zeros(num_layers, input_dim))
        bound = 1.0 / math.sqrt(input_dim)  # nn.Linear's default init
        nn.init.uniform_(self.w, -bound, bound)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # checkpoints written before the one-matmul form kept one nn.Linear(D, 1) per layer
        old = sorted((k for k in state_dict if k.startswith(prefix + "w.") and k.endswith(".weight")),
                     key=lambda k: int(k[len(prefix) + 2 : -7]))
        if old and prefix + "w" not in state_dict:
            state_dict[prefix + "w"] = torch.cat([state_dict.pop(k) for k in old], 0)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(self, x0: Tensor) -> Tensor:
        layers = self.w.shape[0]
        if layers == 0:
            return x0
        proj = x0 @ self.w.t()  # [B, L]: w_l . x_0
        bias_sums = torch.cumsum(self.b, 0)  # B_{l+1}
        wb = (self.w[1:] * bias_sums[:-1]).sum(1)  # w_l . B_l for l >= 1 (B_0 = 0)
        c = torch.ones_like(proj[:, :1])
        for i in range(layers):
            s = proj[:, i : i + 1] * c
            c = c + (s if i == 0 else s + wb[i - 1])
        return x0 * c + bias_sums[-1]


class CrossNetV2(nn.Module):
    """DCNv2 cross network: x_{l+1} = x_0 * (W_l x_l + b_l) + x_l with a full-rank W_l."""

    def __init__(self, input_dim: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(input_dim, input_dim) for _ in range(num_layers))

    def forward(self, x0: Tensor) -> Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


class CrossNetMix(nn.Module):
    """DCN-Mix, DCN-V2's low-rank mixture of cross experts (Wang et al. 2021, Eq. 4):
    x_{l+1} = sum_i G_i(x_l) E_i(x_l) + x_l, E_i(x_l) = x_0 * (U_i g(C_i g(V_i^T x_l)) + b_l),
    with g = tanh and G the softmax over the experts of a linear gate on x_l. Each expert costs
    2 d r + r^2 weights instead of the full-rank layer's d^2; every expert of a layer runs in one
    batched product."""

    def __init__(self, input_dim: int, num_layers: int, low_rank: int, num_experts: int) -> None:
        super().__init__()

        def xavier(*shape: int) -> nn.Parameter:  # per expert matrix [a, b]: std sqrt(2 / (a + b))
            return nn.Parameter(torch.randn(*shape) * math.sqrt(2.0 / (shape[-1] + shape[-2])))

        self.U = xavier(num_layers, num_experts, input_dim, low_rank)
        self.V = xavier(num_layers, num_experts, input_dim, low_rank)
        self.C = xavier(num_layers, num_experts, low_rank, low_rank)
        self.gate = nn.Parameter(torch.randn(num_layers, num_experts, input_dim) / math.sqrt(input_dim))
        self.bias = nn.Parameter(torch.zeros(num_layers, input_dim))

    def forward(self, x0: Tensor) -> Tensor:
        # The gate's weights sum to 1, so sum_i G_i x_0 * (U_i v_i + b) = x_0 * (sum_i U_i (G_i v_i) + b):
        # the experts' projections back to d are one [B, E r] x [E r, d] product, and no [B, E, d]
        # tensor of expert outputs is made (3.2x faster fwd + bwd than mixing those: 15.5 against 50 ms
        # for 1,024 rows, d 390, r 32, 4 experts, 3 layers; about the full-rank layers' 18 ms).
        x, (layers, experts, d, r) = x0, self.U.shape
        for layer in range(layers):
            v = torch.tanh(x @ self.V[layer].permute(1, 0, 2).reshape(d, experts * r)).view(-1, experts, r)
            v = torch.tanh(torch.einsum("ers,bes->ber", self.C[layer], v))
            gate = torch.softmax(x @ self.gate[layer].t(), dim=1)  # [B, experts]
            mixed = (gate.unsqueeze(-1) * v).reshape(-1, experts * r)
            x = x0 * (mixed @ self.U[layer].permute(1, 0, 2).reshape(d, experts * r).t() + self.bias[layer]) + x
        return x


class CIN(nn.Module):
    """xDeepFM compressed interaction network; returns the sum-pooled feature maps [B, output_dim].

    Layer k: Z = outer product of X_{k-1} [H, D] and X_0 [F, D] per embedding dimension,
    compressed by a 1x1 convolution to H_k maps (linear, as in the paper). With `split_half`
    (the authors' default) half of each hidden layer's maps go to the output and half on.
    """

    def __init__(self, num_fields: int, layer_units: Sequence[int], split_half: bool = True) -> None:
        super().__init__()
        self.convs = nn.ModuleList()
        self.keep: list[int] = []  # maps a layer passes on: the first half with split_half, else all
        self.pool_from: list[int] = []  # the maps it sum-pools into the output: the other half, else all
        prev, self.output_dim = num_fields, 0
        for i, units in enumerate(layer_units):
            halve = split_half and i < len(layer_units) - 1
            if halve and units % 2:
                raise ConfigError(f"cin_layer_units must be even when split_half is on (all but the last), got {units}")
            self.convs.append(nn.Conv1d(num_fields * prev, units, kernel_size=1))
            prev = units // 2 if halve else units
            self.keep.append(prev)
            self.pool_from.append(prev if halve else 0)
            self.output_dim += units - self.pool_from[-1]

    def forward(self, e: Tensor) -> Tensor:
        b, f, d = e.shape
        x, pooled = e, []
        e_rows = e.transpose(1, 2).reshape(b * d, f)  # one row of field values per (instance, dim)
        for conv, keep, pool_from in zip(self.convs, self.keep, self.pool_from):
            # h[b,u,d] = sum_{i,j} W[u, i*F + j] x[b,i,d] e[b,j,d] + bias[u], contracted over the
            # fields first (one GEMM, [B*D, U*H]) and then over x (a batched dot): the outer
            # product [B, H*F, D] the paper's formula builds is never materialised (at 39 fields
            # and batch 4096 it is 400 MB a layer; 2-3.7x faster forward and backward)
            u, h_in = conv.out_channels, x.shape[1]
            t = e_rows @ conv.weight.view(u * h_in, f).t()
            h = torch.bmm(t.view(b * d, u, h_in), x.transpose(1, 2).reshape(b * d, h_in, 1))
            h = h.view(b, d, u).transpose(1, 2) + conv.bias.unsqueeze(-1)
            x = h[:, :keep]
            pooled.append(h[:, pool_from:].sum(-1))
        return torch.cat(pooled, dim=1)


class InnerProduct(nn.Module):
    """IPNN: inner products <e_i, e_j> of all field pairs i < j, as [B, F(F-1)/2]."""

    def __init__(self, num_fields: int) -> None:
        super().__init__()
        row, col = torch.triu_indices(num_fields, num_fields, offset=1)
        self.register_buffer("row", row, persistent=False)
        self.register_buffer("col", col, persistent=False)
        self.output_dim = int(row.numel())

    def forward(self, e: Tensor) -> Tensor:
        return torch.bmm(e, e.transpose(1, 2))[:, self.row, self.col]


class SelfAttention(nn.Module):
    """AutoInt interacting layer: multi-head self-attention over fields, residual, then ReLU."""

    def __init__(
        self, input_dim: int, attention_dim: int, num_heads: int, use_residual: bool = True, use_scale: bool = False,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        out = attention_dim * num_heads
        self.norm = nn.LayerNorm(out) if layer_norm else None
        self.query = nn.Linear(input_dim, out, bias=False)
        self.key = nn.Linear(input_dim, out, bias=False)
        self.value = nn.Linear(input_dim, out, bias=False)
        self.residual = nn.Linear(input_dim, out, bias=False) if use_residual else None
        self.heads, self.head_dim, self.output_dim = num_heads, attention_dim, out
        self.scale = 1.0 / math.sqrt(attention_dim) if use_scale else 1.0

    def forward(self, x: Tensor) -> Tensor:
        b, f, _ = x.shape

        def split(t: Tensor) -> Tensor:  # [B, F, H*d] -> [B, H, F, d]
            return t.view(b, f, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        # softmax(q k^T * scale) v in one fused kernel: 2.3x faster to train than the three ops
        # on CPU (B*H attention maps of F x F are too small for batched matmuls to run well)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        out = out.transpose(1, 2).reshape(b, f, self.output_dim)
        if self.residual is not None:
            out = out + self.residual(x)
        if self.norm is not None:  # FuxiCTR's placement: after the residual, before the ReLU
            out = self.norm(out)
        return torch.relu(out)


class SENet(nn.Module):
    """FiBiNET squeeze-excitation: field weights from mean-pooled embeddings re-weight the fields."""

    def __init__(self, num_fields: int, reduction_ratio: float = 3.0) -> None:
        super().__init__()
        reduced = max(1, int(num_fields / reduction_ratio))
        self.excitation = nn.Sequential(
            nn.Linear(num_fields, reduced, bias=False),
            nn.ReLU(),
            nn.Linear(reduced, num_fields, bias=False),
            nn.ReLU(),
        )

    def forward(self, e: Tensor) -> Tensor:
        weights = self.excitation(e.mean(dim=-1))  # [B, F]
        return e * weights.unsqueeze(-1)


class Bilinear(nn.Module):
    """FiBiNET bilinear interaction p_ij = (v_i W) * v_j for all pairs i < j, as [B, P, D].

    W is shared by all pairs ("field_all"), one per left field ("field_each") or one per
    pair ("field_interaction", the FiBiNET/FuxiCTR default).
    """

    TYPES = ("field_all", "field_each", "field_interaction")

    def __init__(self, num_fields: int, embedding_dim: int, bilinear_type: str = "field_interaction") -> None:
        super().__init__()
        if bilinear_type not in self.TYPES:
            raise ConfigError(f"unknown bilinear_type {bilinear_type!r}; known: {', '.join(self.TYPES)}")
        if num_fields < 2:
            raise ConfigError("a bilinear interaction needs at least two fields")
        self.num_pairs = num_fields * (num_fields - 1) // 2
        n = {"field_all": 1, "field_each": num_fields - 1, "field_interaction": self.num_pairs}[bilinear_type]
        self.weight = nn.Parameter(torch.empty(n, embedding_dim, embedding_dim))
        # Xavier-normal for each D x D matrix (FuxiCTR's init of its per-pair nn.Linear). Xavier on the
        # stacked [n, D, D] tensor takes fan_out = n * D: 20x too small at 741 pairs, which left
        # the bilinear outputs near zero and FiBiNET 0.006 AUC below the DNN on synthetic data.
        nn.init.normal_(self.weight, std=embedding_dim ** -0.5)
        self.bilinear_type = bilinear_type

    def forward(self, e: Tensor) -> Tensor:
        # Pairs come left field by left field (the order of triu_indices), so block i is
        # (v_i W_i*) * e[:, i+1:]: a contiguous slice for v_j and, for "field_interaction", one
        # [B, D] x [D, n*D] matmul per left field. Gathering [B, P, D] twice and a P-way batched
        # 10x10 matmul cost 3x the time (FiBiNET at 39 fields: 741 pairs).
        f = e.shape[1]
        if self.bilinear_type == "field_all":
            left = e[:, :-1] @ self.weight[0]
        elif self.bilinear_type == "field_each":
            left = torch.einsum("bfd,fde->bfe", e[:, :-1], self.weight)
        else:
            d = self.weight.shape[1]
            blocks, start = [], 0
            for i in range(f - 1):
                n = f - 1 - i
                w = self.weight[start: start + n].permute(1, 0, 2).reshape(d, n * d)
                blocks.append((e[:, i] @ w).view(-1, n, d) * e[:, i + 1:])
                start += n
            return torch.cat(blocks, 1)
        return torch.cat([left[:, i: i + 1] * e[:, i + 1:] for i in range(f - 1)], 1)
