"""Every zoo model against an independent implementation: DeepCTR-Torch 0.3.0, by weight transplant.

Both models get the same weights (DeepCTR's random ones copied into mtkd's layout: one embedding
table with field offsets, first-order weights as its extra columns), then must give the same logits
on random rows, in float64 and eval mode (batch-norm statistics copied too). Where DeepCTR departs
from the paper it is brought to the paper's form and the departure is named: it adds a first-order
(LR) part to DCN, DCNv2 and AutoInt (zeroed here unless mtkd's model has one), its CIN is linear
only with `cin_activation="linear"` (xDeepFM's Eq. 6 has no nonlinearity), and FiBiNET shares one
bilinear layer between the raw and the SENET embeddings (mtkd has one each, as the paper; tied here).
Numeric fields: mtkd's `numeric_input: dense` is DeepCTR's layout (raw values to the DNN and the
linear part).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from torch import nn

from mtkd.data.batch import Batch
from mtkd.data.feature_map import CategoricalField, FeatureMap
from mtkd.models import build_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from deepctr_offline import import_deepctr  # noqa: E402

dc = import_deepctr()
from deepctr_torch.inputs import DenseFeat, SparseFeat  # noqa: E402

VOCABS, D, N, H = (7, 5, 9, 6), 8, 300, (16, 12)
F, P = len(VOCABS), len(VOCABS) * (len(VOCABS) - 1) // 2


@pytest.fixture(autouse=True)
def float64():
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(saved)


def rows(n_num: int) -> tuple[FeatureMap, Batch, torch.Tensor, list]:
    g = torch.Generator().manual_seed(0)
    fmap = FeatureMap(categorical=tuple(CategoricalField(f"c{i}", v) for i, v in enumerate(VOCABS)),
                      numeric=tuple(f"n{j}" for j in range(n_num)))
    cat = torch.stack([torch.randint(0, v, (N,), generator=g) for v in VOCABS], 1)
    num = torch.randn(N, n_num, generator=g) if n_num else None
    x = torch.cat([cat.double()] + ([num] if n_num else []), 1)
    cols = [SparseFeat(f"c{i}", v, embedding_dim=D) for i, v in enumerate(VOCABS)] + \
           [DenseFeat(f"n{j}", 1) for j in range(n_num)]
    return fmap, Batch(label=torch.zeros(N), index=torch.arange(N), cat=cat, num=num), x, cols


@torch.no_grad()
def randomise(model: nn.Module) -> None:
    """Weights far from their init (DeepCTR's embeddings start at std 1e-4), so every path counts."""
    g = torch.Generator().manual_seed(1)
    for p in model.parameters():
        p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * 0.5)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


@torch.no_grad()
def copy_embedding(emb: nn.Module, ref: nn.Module, linear: bool = True) -> None:
    for i, v in enumerate(VOCABS):
        off = int(emb.offsets[i])
        emb.table.weight[off:off + v, :D] = ref.embedding_dict[f"c{i}"].weight
        if emb.linear_dim:
            emb.table.weight[off:off + v, D:] = ref.linear_model.embedding_dict[f"c{i}"].weight if linear else 0.0
    if emb.numeric_linear is not None:
        emb.numeric_linear.copy_(ref.linear_model.weight if linear else 0.0)


@torch.no_grad()
def copy_mlp(mlp: nn.Module, ref: nn.Module, first: torch.Tensor | None = None) -> None:
    linears = [m for m in mlp.net if isinstance(m, nn.Linear)]
    assert len(linears) == len(ref.linears)
    for k, (a, b) in enumerate(zip(linears, ref.linears)):
        a.weight.copy_(b.weight if k or first is None else first)
        a.bias.copy_(b.bias)
    for a, b in zip([m for m in mlp.net if isinstance(m, nn.BatchNorm1d)], getattr(ref, "bn", None) or []):
        a.load_state_dict(b.state_dict())


@torch.no_grad()
def copy_out(model: nn.Module, ref: nn.Module, weight: torch.Tensor | None = None) -> None:
    w = ref.dnn_linear.weight if weight is None else weight
    if getattr(model, "dense_to_out", False):  # AutoInt without DNN or wide part: the raw values reach `out`
        w = torch.cat([w, torch.zeros(1, model.embedding.n_dense)], 1)  # (DeepCTR has no such path)
    model.out.weight.copy_(w)
    model.out.bias.copy_(ref.out.bias)
    if getattr(model, "linear_bias", None) is not None:  # DeepCTR has one output bias, in `out`
        model.linear_bias.zero_()


@torch.no_grad()
def zero_linear(ref: nn.Module) -> None:
    for p in ref.linear_model.parameters():
        p.zero_()


def pair(name: str, ref_cls: Callable, cols: list, fmap: FeatureMap, ref_kw: dict, kw: dict,
         lr_part: bool = True) -> tuple[nn.Module, nn.Module]:
    ref = ref_cls(cols, cols, task="regression", **ref_kw).double()
    randomise(ref)
    if not lr_part:
        zero_linear(ref)
    dense = {"numeric_input": "dense"} if fmap.numeric else {}
    return build_model(name, fmap, embedding_dim=D, **kw, **dense).double(), ref


def lr(fmap, cols, **_):
    ref = dc.models.WDL(cols, cols, dnn_hidden_units=(), task="regression").double()
    randomise(ref)
    m = build_model("lr", fmap).double()
    with torch.no_grad():
        t = m.linear.weights
        for i, v in enumerate(VOCABS):
            off = int(t.offsets[i])
            t.table.weight[off:off + v] = ref.linear_model.embedding_dict[f"c{i}"].weight
        if fmap.numeric:
            t.numeric.copy_(ref.linear_model.weight)
        m.linear.bias.copy_(ref.out.bias)
    return m, ref


def mlp_model(name: str, ref_cls: Callable, lr_part: bool) -> Callable:
    def build(fmap, cols, bn=False):
        m, ref = pair(name, ref_cls, cols, fmap, {"dnn_hidden_units": H, "dnn_use_bn": bn},
                      {"hidden_units": list(H), "batch_norm": bn}, lr_part)
        copy_embedding(m.embedding, ref)
        copy_mlp(m.mlp, ref.dnn)
        copy_out(m, ref)
        return m, ref
    return build


def fm(fmap, cols, **_):
    m, ref = pair("fm", dc.models.DeepFM, cols, fmap, {"dnn_hidden_units": ()}, {})
    copy_embedding(m.embedding, ref)
    with torch.no_grad():
        m.linear_bias.copy_(ref.out.bias)
    return m, ref


def cross(name: str) -> Callable:
    def build(fmap, cols, **_):
        kind = "vector" if name == "dcn" else "matrix"
        m, ref = pair(name, dc.models.DCN, cols, fmap,
                      {"cross_num": 3, "cross_parameterization": kind, "dnn_hidden_units": H},
                      {"num_cross_layers": 3, "hidden_units": list(H)}, lr_part=False)
        copy_embedding(m.embedding, ref)
        copy_mlp(m.mlp, ref.dnn)
        with torch.no_grad():
            if name == "dcn":
                m.cross.w.copy_(ref.crossnet.kernels.squeeze(-1))
                m.cross.b.copy_(ref.crossnet.bias.squeeze(-1))
            else:
                for i, layer in enumerate(m.cross.layers):
                    layer.weight.copy_(ref.crossnet.kernels[i])
                    layer.bias.copy_(ref.crossnet.bias[i].squeeze(-1))
        copy_out(m, ref)
        return m, ref
    return build


def dcn_mix(fmap, cols, **_):
    """DCN-Mix (dcnv2 with low_rank) against DeepCTR's DCNMix, whose gate is one per expert shared by
    every layer (mtkd has one per layer: given the same weights here)."""
    m, ref = pair("dcnv2", dc.models.DCNMix, cols, fmap,
                  {"cross_num": 3, "dnn_hidden_units": H, "low_rank": 4, "num_experts": 3},
                  {"num_cross_layers": 3, "hidden_units": list(H), "low_rank": 4, "num_experts": 3}, lr_part=False)
    copy_embedding(m.embedding, ref)
    copy_mlp(m.mlp, ref.dnn)
    with torch.no_grad():
        c = ref.crossnet
        m.cross.U.copy_(c.U_list)
        m.cross.V.copy_(c.V_list)
        m.cross.C.copy_(c.C_list)
        m.cross.bias.copy_(c.bias.squeeze(-1))
        m.cross.gate.copy_(torch.cat([g.weight for g in c.gating]).expand_as(m.cross.gate))
    copy_out(m, ref)
    return m, ref


def xdeepfm(fmap, cols, cin=(6, 4), split=True, **_):
    m, ref = pair("xdeepfm", dc.models.xDeepFM, cols, fmap,
                  {"dnn_hidden_units": H, "cin_layer_size": cin, "cin_split_half": split, "cin_activation": "linear"},
                  {"cin_layer_units": list(cin), "split_half": split, "hidden_units": list(H)})
    copy_embedding(m.embedding, ref)
    copy_mlp(m.mlp, ref.dnn)
    with torch.no_grad():
        for a, b in zip(m.cin.convs, ref.cin.conv1ds):
            a.weight.copy_(b.weight)
            a.bias.copy_(b.bias)
    copy_out(m, ref, torch.cat([ref.cin_linear.weight, ref.dnn_linear.weight], 1))
    return m, ref


def autoint(name: str, use_wide: bool) -> Callable:
    def build(fmap, cols, **_):
        use_dnn = name == "autoint_plus"
        m, ref = pair(name, dc.models.AutoInt, cols, fmap,
                      {"att_layer_num": 3, "att_head_num": 2, "att_res": True, "dnn_hidden_units": H if use_dnn else ()},
                      {"attention_layers": 3, "num_heads": 2, "attention_dim": D // 2, "use_residual": True,
                       "use_wide": use_wide, "hidden_units": list(H)}, lr_part=use_wide)
        copy_embedding(m.embedding, ref)
        if use_dnn:
            copy_mlp(m.mlp, ref.dnn)
        with torch.no_grad():
            for a, b in zip(m.attention, ref.int_layers):
                for mine, theirs in ((a.query, b.W_Query), (a.key, b.W_key), (a.value, b.W_Value), (a.residual, b.W_Res)):
                    mine.weight.copy_(theirs.t())
        copy_out(m, ref)
        return m, ref
    return build


def fibinet(kind: str) -> Callable:
    def build(fmap, cols, **_):
        m, ref = pair("fibinet", dc.models.FiBiNET, cols, fmap,
                      {"bilinear_type": kind, "reduction_ratio": 2, "dnn_hidden_units": H},
                      {"reduction_ratio": 2.0, "bilinear_type": f"field_{kind}", "hidden_units": list(H)})
        copy_embedding(m.embedding, ref)
        w0 = ref.dnn.linears[0].weight  # DeepCTR's columns [q (SENET), p (raw), dense]; mtkd's [p, q, dense]
        copy_mlp(m.mlp, ref.dnn, torch.cat([w0[:, P * D:2 * P * D], w0[:, :P * D], w0[:, 2 * P * D:]], 1))
        with torch.no_grad():
            for a, b in zip(m.senet.excitation, ref.SE.excitation):
                if isinstance(a, nn.Linear):
                    a.weight.copy_(b.weight)
            if kind == "all":
                w = ref.Bilinear.bilinear.weight.t().unsqueeze(0)
            else:
                ws = [layer.weight.t() for layer in ref.Bilinear.bilinear]
                w = torch.stack(ws[:F - 1] if kind == "each" else ws)  # DeepCTR's 'each' allocates one unused
            m.bilinear.weight.copy_(w)
            m.bilinear_se.weight.copy_(w)
        copy_out(m, ref)
        return m, ref
    return build


def ipnn(fmap, cols, **_):
    ref = dc.models.PNN(cols, dnn_hidden_units=H, use_inner=True, use_outter=False, task="regression").double()
    randomise(ref)
    m = build_model("ipnn", fmap, embedding_dim=D, hidden_units=list(H),
                    **({"numeric_input": "dense"} if fmap.numeric else {})).double()
    copy_embedding(m.embedding, ref, linear=False)
    w0 = ref.dnn.linears[0].weight  # DeepCTR's columns [embeddings, inner products, dense]; mtkd's [emb, dense, inner]
    copy_mlp(m.mlp, ref.dnn, torch.cat([w0[:, :F * D], w0[:, F * D + P:], w0[:, F * D:F * D + P]], 1))
    copy_out(m, ref)
    return m, ref


def nfm(fmap, cols, hidden=H, **_):
    m, ref = pair("nfm", dc.models.NFM, cols, fmap, {"dnn_hidden_units": hidden}, {"hidden_units": list(hidden)})
    copy_embedding(m.embedding, ref)
    copy_mlp(m.mlp, ref.dnn)
    copy_out(m, ref)
    return m, ref


CASES: dict[str, tuple[Callable, dict[str, Any]]] = {
    "lr": (lr, {}),
    "fm": (fm, {}),
    "dnn": (mlp_model("dnn", dc.models.WDL, lr_part=False), {}),
    "dnn-bn": (mlp_model("dnn", dc.models.WDL, lr_part=False), {"bn": True}),
    "wide_deep": (mlp_model("wide_deep", dc.models.WDL, lr_part=True), {}),
    "deepfm": (mlp_model("deepfm", dc.models.DeepFM, lr_part=True), {}),
    "deepfm-bn": (mlp_model("deepfm", dc.models.DeepFM, lr_part=True), {"bn": True}),
    "dcn": (cross("dcn"), {}),
    "dcnv2": (cross("dcnv2"), {}),
    "dcnv2-mix": (dcn_mix, {}),
    "xdeepfm": (xdeepfm, {}),
    "xdeepfm-3-layers": (xdeepfm, {"cin": (6, 8, 5)}),
    "xdeepfm-no-split": (xdeepfm, {"cin": (5, 3), "split": False}),
    "autoint": (autoint("autoint", use_wide=False), {}),
    "autoint-wide": (autoint("autoint", use_wide=True), {}),
    "autoint_plus": (autoint("autoint_plus", use_wide=False), {}),
    "autoint_plus-wide": (autoint("autoint_plus", use_wide=True), {}),
    "fibinet-all": (fibinet("all"), {}),
    "fibinet-each": (fibinet("each"), {}),
    "fibinet-interaction": (fibinet("interaction"), {}),
    "ipnn": (ipnn, {}),
    "nfm": (nfm, {}),
    "nfm-1-layer": (nfm, {"hidden": (10,)}),
}


# FM with numeric fields has no DeepCTR counterpart (DeepCTR sends them to the linear part only; mtkd
# embeds them, Rendle's FM): test_fm_with_numeric_fields_is_rendles_fm checks that case
PAIRS = [pytest.param(case, n, id=f"{case}-{'with-numeric' if n else 'categorical'}")
         for case in CASES for n in (0, 2) if not (case == "fm" and n)]


@pytest.mark.parametrize("case, n_num", PAIRS)
def test_same_logits_as_deepctr_torch(case: str, n_num: int) -> None:
    build, kw = CASES[case]
    fmap, batch, x, cols = rows(n_num)
    model, ref = build(fmap, cols, **kw)
    model.eval()
    ref.eval()
    with torch.no_grad():
        mine, theirs = model(batch).logits, ref(x.clone()).squeeze(-1)
    assert theirs.std() > 0.01  # the comparison has something to compare
    assert (mine - theirs).abs().max().item() < 1e-10


def test_fm_with_numeric_fields_is_rendles_fm() -> None:
    """FM over the design vector [one-hot ids, raw numeric values] (Rendle 2010, Eq. 1)."""
    fmap, batch, _, _ = rows(2)
    m = build_model("fm", fmap, embedding_dim=D).double()
    randomise(m)
    m.eval()
    emb = m.embedding
    x = torch.zeros(N, sum(VOCABS) + 2)
    for i in range(F):
        x[torch.arange(N), int(emb.offsets[i]) + batch.cat[:, i]] = 1.0
    x[:, sum(VOCABS):] = batch.num
    vw = torch.cat([emb.table.weight, emb.numeric], 0)
    v, w = vw[:, :D], vw[:, D]
    expected = m.linear_bias + x @ w + 0.5 * ((x @ v) ** 2 - (x ** 2) @ (v ** 2)).sum(1)
    with torch.no_grad():
        assert torch.allclose(m(batch).logits, expected, atol=1e-10)


@pytest.mark.parametrize("shape", [(64, 6), (16, 5, 6)], ids=["2d", "3d"])
def test_dice_matches_deepctr_torch(shape: tuple[int, ...]) -> None:
    """DIN's Dice in training (batch statistics) and eval mode (running ones), 2-D and 3-D inputs;
    DeepCTR's batch norm has an affine part at its identity init, mtkd's none (the paper's)."""
    from mtkd.models.layers import Dice

    ref = dc.layers.activation.Dice(shape[-1], dim=len(shape)).double()
    mine = Dice(shape[-1]).double()
    with torch.no_grad():
        ref.alpha.copy_(torch.linspace(-0.5, 0.5, shape[-1]).reshape(ref.alpha.shape))
        mine.alpha.copy_(ref.alpha.reshape(-1))
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(3)) * 2 + 0.5
    torch.testing.assert_close(mine(x), ref(x), atol=1e-10, rtol=0)  # train: the batch's statistics
    mine.eval()
    ref.eval()
    torch.testing.assert_close(mine(x), ref(x), atol=1e-10, rtol=0)  # eval: the running ones, updated alike
