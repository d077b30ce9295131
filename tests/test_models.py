"""Model zoo: shapes, gradients, sparse embeddings, registry errors, and that every model can learn."""

from __future__ import annotations

import copy
import re
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from conftest import fit_until
from mtkd.data.batch import Batch
from mtkd.data.feature_map import CategoricalField, FeatureMap, SequenceField
from mtkd.errors import ConfigError
from mtkd.models import MODELS, CTRModel, ModelOutput, build_model, model_params

ALL = sorted(MODELS)
TEXT = ["text_cnn", "text_transformer"]  # read a sequence field in order; need one
HISTORY = ["din"]  # attends over a history that shares a categorical field's table; needs one
VOCAB, SEQ_VOCAB, SEQ_LEN = 20, 15, 5


def feature_map(task: str = "binary", num_classes: int = 2) -> FeatureMap:
    return FeatureMap(
        categorical=tuple(CategoricalField(f"c{i}", VOCAB) for i in range(3)),
        numeric=("n0", "n1"),
        # "hist": items of c0 (its vocabulary and embedding rows), as a history of clicked items
        sequences=(SequenceField("tags", SEQ_VOCAB, SEQ_LEN), SequenceField("hist", VOCAB, SEQ_LEN, share="c0")),
        task=task,
        num_classes=num_classes,
    )


def random_batch(n: int, fmap: FeatureMap, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(1, SEQ_VOCAB, (n, SEQ_LEN), generator=g)
    lengths = torch.randint(0, SEQ_LEN + 1, (n, 1), generator=g)  # some rows are all padding
    seq = seq * (torch.arange(SEQ_LEN) < lengths)
    hist = torch.randint(1, VOCAB, (n, SEQ_LEN), generator=g) * (torch.arange(SEQ_LEN) < lengths.roll(1, 0))
    if fmap.task == "binary":
        label = torch.randint(0, 2, (n,), generator=g).float()
    else:
        label = torch.randint(0, fmap.num_classes, (n,), generator=g)
    return Batch(
        label=label,
        index=torch.arange(n),
        cat=torch.randint(1, VOCAB, (n, len(fmap.categorical)), generator=g),
        num=torch.randn(n, len(fmap.numeric), generator=g),
        seq={"tags": seq, "hist": hist},
    )


def loss_of(out: ModelOutput, batch: Batch, fmap: FeatureMap) -> torch.Tensor:
    if fmap.task == "binary":
        return F.binary_cross_entropy_with_logits(out.logits, batch.label)
    return F.cross_entropy(out.logits, batch.label)


@pytest.mark.parametrize("task", ["binary", "multiclass"])
@pytest.mark.parametrize("name", ALL)
def test_forward_backward(name: str, task: str) -> None:
    torch.manual_seed(0)
    fmap = feature_map(task, num_classes=4)
    model = build_model(name, fmap)
    assert isinstance(model, CTRModel)
    assert sum(p.numel() for p in model.parameters()) > 0
    batch = random_batch(32, fmap)
    out = model(batch)
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == ((32,) if task == "binary" else (32, 4))
    assert out.hidden.shape == (32, model.hidden_dim)
    assert out.hidden.requires_grad
    loss_of(out, batch, fmap).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: {pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: {pname} has a non-finite gradient"


@pytest.mark.parametrize("task", ["binary", "multiclass"])
@pytest.mark.parametrize("name", ALL)
def test_output_starts_at_the_label_prior(name: str, task: str) -> None:
    """Every model has a bias straight on its logits, and `init_output_prior` puts the untrained
    model's predictions at the training labels' frequencies (not at p = 0.5 / uniform)."""
    torch.manual_seed(0)
    fmap = feature_map(task, num_classes=4)
    model = build_model(name, fmap).eval()
    freqs = torch.tensor([0.95, 0.05]) if task == "binary" else torch.tensor([0.1, 0.2, 0.3, 0.4])
    batch = random_batch(256, fmap)
    assert model.init_output_prior(freqs, batch), f"{name} has no output bias"
    with torch.no_grad():
        logits = model(batch).logits
    if task == "binary":
        assert abs(torch.sigmoid(logits).mean().item() - 0.05) < 0.01
    else:
        torch.testing.assert_close(logits.softmax(-1).mean(0), freqs, atol=0.02, rtol=0)
    assert not model.init_output_prior(None)  # no counts (an unlabelled split): left as it is



@pytest.mark.parametrize("name", ["dnn", "deepfm"])
def test_one_outlier_does_not_move_the_output_prior(name: str) -> None:
    """An unscaled count of 1e12 in one row (transform: none) gave that row a huge logit; the mean
    over the batch then set the bias for it, and every other row started far from the prior."""
    torch.manual_seed(0)
    fmap = feature_map()
    model = build_model(name, fmap, numeric_input="dense").eval()
    batch = random_batch(256, fmap)
    batch.num[3, 0] = 1e12
    assert model.init_output_prior(torch.tensor([0.95, 0.05]), batch)
    with torch.no_grad():
        p = torch.sigmoid(model(batch).logits)
    assert abs(torch.cat([p[:3], p[4:]]).mean().item() - 0.05) < 0.01

@pytest.mark.parametrize("name", [n for n in ALL if n not in TEXT])
def test_sparse_embeddings_and_reg_loss(name: str) -> None:
    torch.manual_seed(0)
    fmap = feature_map()
    model = build_model(name, fmap, sparse=True, embedding_regularizer=1e-3)
    sparse = list(model.sparse_parameters())
    dense = list(model.dense_parameters())
    assert sparse and len(sparse) + len(dense) == len(list(model.parameters()))
    batch = random_batch(16, fmap)
    reg = model.reg_loss()  # before any forward: zero, not an error
    assert float(reg) == 0.0
    out = model(batch)
    reg = model.reg_loss()
    assert reg.requires_grad and float(reg.detach()) > 0
    (loss_of(out, batch, fmap) + reg).backward()
    assert all(p.grad is not None and p.grad.is_sparse for p in sparse)
    assert all(p.grad is None or not p.grad.is_sparse for p in dense)
    copy.deepcopy(model)  # cached embedding rows must not break copies
    with torch.no_grad():
        model(batch)
    assert float(model.reg_loss()) == 0.0  # no rows kept from an inference pass


def test_reg_loss_zero_without_coefficient() -> None:
    model = build_model("dnn", feature_map())
    model(random_batch(8, feature_map()))
    assert float(model.reg_loss()) == 0.0


def test_deterministic_under_seed() -> None:
    fmap, batch = feature_map(), random_batch(8, feature_map())
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        outs.append(build_model("xdeepfm", fmap)(batch).logits)
    assert torch.equal(outs[0], outs[1])


def test_build_model_errors() -> None:
    with pytest.raises(ConfigError, match="unknown model 'nope'.*deepfm"):
        build_model("nope", feature_map())
    with pytest.raises(ConfigError, match="'hiden_units'.*hidden_units"):
        build_model("deepfm", feature_map(), hiden_units=[8])
    with pytest.raises(ConfigError, match="'foo'"):
        build_model("autoint_plus", feature_map(), foo=1)
    with pytest.raises(ConfigError, match="bilinear_type"):
        build_model("fibinet", feature_map(), bilinear_type="nope")


@pytest.mark.parametrize("model, params, why", [
    ("dnn", {"hidden_units": [-1]}, "has -1: every size must be 1 or more"),  # was torch's "negative dimension"
    ("dnn", {"hidden_units": [64, 0]}, "has 0"),  # was accepted: a DNN that ignores its input
    ("dcn", {"num_cross_layers": -1}, "must be 1 or more"),
    ("fibinet", {"reduction_ratio": 0}, "must be more than 0"),  # was a ZeroDivisionError
    ("xdeepfm", {"cin_layer_units": []}, "must list at least one layer size"),  # was torch.cat of nothing
    ("nfm", {"dropout": 1.5}, r"must be in \[0, 1\)"),  # was nn.Dropout's ValueError
    ("autoint", {"dropout": -0.1}, r"must be in \[0, 1\)"),  # was accepted: its DNN branch is off
    ("autoint", {"attention_dim": -4}, "must be 1 or more"),
    ("deepfm", {"embedding_dim": 0}, "must be 1 or more"),
    ("lr", {"embedding_regularizer": -1e-4}, "must be 0 or more"),
])
def test_hyper_parameters_out_of_range_are_config_errors(model, params, why) -> None:
    name, value = next(iter(params.items()))
    with pytest.raises(ConfigError, match=rf"model '{model}': params.{name} = .* {why}"):
        build_model(model, feature_map(), **params)


def test_model_params_and_autoint_plus() -> None:
    assert model_params("deepfm")["hidden_units"] == [64, 64, 64]
    assert model_params("autoint")["use_dnn"] is False
    assert model_params("autoint_plus")["use_dnn"] is True
    plus = build_model("autoint_plus", feature_map(), embedding_dim=8, hidden_units=[16])
    assert plus.mlp is not None and plus.mlp.output_dim == 16
    assert build_model("autoint", feature_map()).mlp is None


def test_autoint_wide_term_is_first_order() -> None:
    """use_wide adds the per-id first-order weights (one gather with the embeddings) to the logits."""
    torch.manual_seed(0)
    fmap = feature_map()
    model = build_model("autoint", fmap, use_wide=True, embedding_dim=4)
    batch = random_batch(8, fmap)
    with torch.no_grad():
        model.linear_bias.fill_(0.25)
        out = model(batch)
        e, first = model.embedding.with_first_order(batch)
        deep = model.embedding.with_dense(model.attention(e).flatten(1), batch)
        assert torch.allclose(out.logits, (model.out(deep) + first + 0.25).squeeze(-1), atol=1e-6)
        assert torch.allclose(out.hidden[:, :1], first + 0.25)
        model.embedding.table.weight[:, -1] += 1.0  # every first-order weight up by one
        shifted = model(batch).logits
    # one first-order weight per categorical field, plus the mean of a non-empty history's (its rows are
    # c0's); "tags" has a table of its own
    expected = len(fmap.categorical) + (batch.seq["hist"] != 0).any(1).float()
    assert torch.allclose(shifted - out.logits, expected, atol=1e-5)



def test_autoint_wide_dense_numerics_get_one_weight() -> None:
    """With use_wide and numeric_input=dense (no DNN), a numeric value reaches the logit through its
    first-order weight only; it was also fed to the output layer, a second weight for the same term."""
    torch.manual_seed(0)
    fmap = feature_map()
    model = build_model("autoint", fmap, use_wide=True, numeric_input="dense", embedding_dim=4).eval()
    batch = random_batch(8, fmap)
    assert model.out.in_features == model.embedding.num_fields * model.attention[-1].output_dim
    shifted = replace(batch, num=batch.num + 1.0)
    with torch.no_grad():
        delta = model(shifted).logits - model(batch).logits
        expected = model.embedding.numeric_linear.sum(0)
    assert torch.allclose(delta, expected.expand_as(delta), atol=1e-5)

VARIANTS = [
    ("dnn", {"batch_norm": True, "dropout": 0.2}),
    ("deepfm", {"batch_norm": True, "dropout": 0.2, "hidden_units": []}),
    ("nfm", {"batch_norm": True, "dropout": 0.2, "hidden_units": []}),
    ("nfm", {"dropout": 0.2, "bi_dropout": 0.5}),
    ("dcn", {"hidden_units": []}),
    ("dcnv2", {"structure": "stacked"}),
    ("dcnv2", {"structure": "crossnet_only"}),
    ("dcnv2", {"low_rank": 4, "num_experts": 2}),
    ("xdeepfm", {"split_half": False, "cin_layer_units": [7, 5]}),
    ("autoint", {"use_scale": True, "use_residual": False, "num_heads": 1}),
    ("autoint", {"use_wide": True}),
    ("autoint_plus", {"use_wide": True, "numeric_input": "dense"}),
    ("din", {"activation": "dice", "attention_activation": "dice"}),
    ("fibinet", {"bilinear_type": "field_all"}),
    ("fibinet", {"bilinear_type": "field_each", "batch_norm": True}),
]


@pytest.mark.parametrize("name,params", VARIANTS)
def test_variants(name: str, params: dict) -> None:
    fmap = feature_map("multiclass", num_classes=3)
    model = build_model(name, fmap, **params)
    batch = random_batch(16, fmap)
    loss_of(model(batch), batch, fmap).backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        out = model(batch)
    assert out.logits.shape == (16, 3) and out.hidden.shape == (16, model.hidden_dim)


def test_odd_cin_units_rejected() -> None:
    with pytest.raises(ConfigError, match="even"):
        build_model("xdeepfm", feature_map(), cin_layer_units=[7, 5])


@pytest.mark.parametrize("name, params, message", [
    ("dcnv2", {"structure": "foo"}, "params.structure = 'foo': Input should be 'parallel'"),
    ("fibinet", {"bilinear_type": "each"}, "params.bilinear_type = 'each': Input should be 'field_all'"),
    ("dnn", {"numeric_input": "dens"}, "params.numeric_input = 'dens': Input should be 'embed' or 'dense'"),
    ("xdeepfm", {"cin_layer_units": [15, 15]}, "sizes must be even"),
    ("text_transformer", {"embedding_dim": 10}, "must be a multiple of params.heads 4"),
    ("dcnv2", {"num_experts": 2}, "params.num_experts is for DCN-Mix"),
])
def test_bad_values_are_refused_without_a_dataset(name: str, params: dict, message: str) -> None:
    """Checked up front (an experiment before it trains anything, `mtkd models`), not only when a
    model is built on data: a wrong choice string passed as `str`, and sizes that must agree."""
    from mtkd.models import check_params

    with pytest.raises(ConfigError, match=re.escape(message)):
        check_params(name, params)


@pytest.mark.parametrize("kind", ["categorical_only", "numeric_only"])
@pytest.mark.parametrize("name", ALL)
def test_partial_feature_maps(name: str, kind: str) -> None:
    full = random_batch(8, feature_map())
    if kind == "categorical_only":
        fmap = FeatureMap(categorical=feature_map().categorical)
        batch = Batch(label=full.label, index=full.index, cat=full.cat)
    else:
        fmap = FeatureMap(numeric=("n0", "n1"))
        batch = Batch(label=full.label, index=full.index, num=full.num)
    if name in TEXT:
        with pytest.raises(ConfigError, match="reads a text .sequence. field in order"):
            build_model(name, fmap)
        return
    if name in HISTORY:
        with pytest.raises(ConfigError, match="attends over a history"):
            build_model(name, fmap)
        return
    out = build_model(name, fmap)(batch)
    assert out.logits.shape == (8,) and torch.isfinite(out.logits).all()


DENSE_NUMERIC = [n for n in ALL if "numeric_input" in model_params(n)]


@pytest.mark.parametrize("name", DENSE_NUMERIC)
def test_numeric_input_dense(name: str) -> None:
    """numeric_input=dense: numerics skip the embedding and enter the DNN input as raw values."""
    torch.manual_seed(0)
    fmap = feature_map()
    model = build_model(name, fmap, numeric_input="dense")
    assert model.embedding.numeric is None and model.embedding.num_fields == fmap.num_fields - 2
    batch = random_batch(16, fmap)
    out = model(batch)
    assert out.logits.shape == (16,) and out.hidden.shape == (16, model.hidden_dim)
    loss_of(out, batch, fmap).backward()
    assert all(p.grad is not None for p in model.parameters())
    moved = copy.copy(batch)  # the numeric values reach the output
    moved.num = batch.num + 1.0
    with torch.no_grad():
        assert not torch.allclose(model(moved).logits, out.logits)
    with pytest.raises(ConfigError, match="no field to embed"):
        build_model(name, FeatureMap(numeric=("n0", "n1")), numeric_input="dense")
    with pytest.raises(ConfigError, match="numeric_input"):
        build_model(name, fmap, numeric_input="raw")


def test_numeric_input_dense_narrows_the_dnn() -> None:
    fmap = feature_map()
    embed, dense = build_model("dnn", fmap, embedding_dim=8), build_model("dnn", fmap, embedding_dim=8, numeric_input="dense")
    assert embed.mlp.net[0].in_features == 7 * 8 and dense.mlp.net[0].in_features == 5 * 8 + 2


def learnable_batch(n: int, first_order: bool) -> Batch:
    """Label = parity of c0 (first order, for LR) or parity(c0) XOR parity(c1) (a pure interaction)."""
    batch = random_batch(n, feature_map(), seed=1)
    batch.cat[:, :2] = torch.randint(2, VOCAB, (n, 2), generator=torch.Generator().manual_seed(2))
    p0, p1 = batch.cat[:, 0] % 2, batch.cat[:, 1] % 2
    batch.label = (p0 if first_order else p0 ^ p1).float()
    return batch


@pytest.mark.parametrize("name", ALL)
def test_learns_interaction(name: str) -> None:
    """Near-perfect training AUC within 40 epochs; checked every 5, and the run stops once it is
    there (the text encoders take 10-15 epochs, the rest 5-10: 40 for all cost a minute)."""
    torch.manual_seed(0)
    fmap = feature_map()
    batch = learnable_batch(2000, first_order=name == "lr")
    auc, epoch = fit_until(build_model(name, fmap), batch, batch, epochs=40, every=5, batch_size=500, lr=1e-2,
                           stop_above=0.95)
    assert auc > 0.95, f"{name}: training AUC {auc:.3f} after {epoch} epochs"


def test_cross_net_equals_layer_by_layer_recurrence() -> None:
    """The one-matmul CrossNet computes the paper's x_{l+1} = x0 (w_l . x_l) + b_l + x_l."""
    from mtkd.models.layers import CrossNet

    torch.manual_seed(0)
    net = CrossNet(12, 3).double()
    torch.nn.init.normal_(net.b)
    x0 = torch.randn(5, 12, dtype=torch.float64)
    x = x0
    for i in range(3):
        x = x0 * (x @ net.w[i]).unsqueeze(1) + net.b[i] + x
    assert torch.allclose(net(x0), x, atol=1e-12)
    assert torch.equal(CrossNet(12, 0)(x0.float()), x0.float())
    # checkpoints from the layer-per-Linear form still load
    old = {"b": net.b.detach().clone(), **{f"w.{i}.weight": net.w[i : i + 1].detach().clone() for i in range(3)}}
    fresh = CrossNet(12, 3).double()
    fresh.load_state_dict(old)
    assert torch.equal(fresh.w, net.w)


@pytest.mark.parametrize("name", ["fm", "deepfm", "wide_deep", "xdeepfm", "nfm", "fibinet"])
def test_first_order_weights_ride_in_the_embedding_and_old_checkpoints_load(name: str) -> None:
    """First-order weights are C extra columns of the embedding tables; a checkpoint from before
    (a separate `linear.weights` FeatureEmbedding of width C plus `linear.bias`) loads into it."""
    torch.manual_seed(0)
    fmap = feature_map()
    model = build_model(name, fmap, embedding_dim=8)
    assert not any(k.startswith("linear.") for k in model.state_dict())
    assert model.embedding.table.weight.shape[1] == 8 + 1
    old = {}
    for k, v in model.state_dict().items():
        if k.startswith("embedding.") and v.dim() == 2 and v.shape[1] == 9:
            old[k], old["linear.weights." + k[len("embedding."):]] = v[:, :8].clone(), v[:, 8:].clone()
        elif k == "linear_bias":
            old["linear.bias"] = v + 0.5
        else:
            old[k] = v
    fresh = build_model(name, fmap, embedding_dim=8)
    fresh.load_state_dict(old)
    model.linear_bias.data += 0.5
    model.eval(), fresh.eval()
    batch = random_batch(16, fmap)
    with torch.no_grad():
        torch.testing.assert_close(fresh(batch).logits, model(batch).logits)


@pytest.mark.parametrize("use_scale,layer_norm", [(False, False), (True, False), (False, True)])
def test_self_attention_is_the_papers_formula(use_scale: bool, layer_norm: bool) -> None:
    """AutoInt's layer: relu(softmax(Q K^T * scale) V + residual) per head (fused kernel inside),
    with FuxiCTR's optional layer norm before the ReLU."""
    from mtkd.models.layers import SelfAttention

    torch.manual_seed(0)
    layer = SelfAttention(8, 6, 2, use_residual=True, use_scale=use_scale, layer_norm=layer_norm)
    x = torch.randn(5, 7, 8)
    q, k, v = (m(x).view(5, 7, 2, 6).transpose(1, 2) for m in (layer.query, layer.key, layer.value))
    att = torch.softmax(q @ k.transpose(-1, -2) * (6 ** -0.5 if use_scale else 1.0), -1)
    ref = (att @ v).transpose(1, 2).reshape(5, 7, 12) + layer.residual(x)
    if layer_norm:
        ref = torch.nn.functional.layer_norm(ref, (12,), layer.norm.weight, layer.norm.bias)
    ref = torch.relu(ref)
    torch.testing.assert_close(layer(x), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("split_half", [True, False])
def test_cin_equals_the_outer_product_and_1x1_convolution(split_half: bool) -> None:
    """xDeepFM's CIN without the [B, H*F, D] tensor computes the paper's layer: a 1x1 convolution
    over the outer product of X_{k-1} and X_0 per embedding dimension; the output is every
    layer's sum-pooled maps (p+ = [p1, ..., pk]), with split_half the half not passed on."""
    from mtkd.models.layers import CIN

    torch.manual_seed(0)
    units = [6, 4, 3]
    cin = CIN(5, units, split_half)
    e = torch.randn(3, 5, 7)
    x, ref = e, []
    for k, conv in enumerate(cin.convs):  # the formula, written out independently of the layer's bookkeeping
        h = conv((x.unsqueeze(2) * e.unsqueeze(1)).reshape(3, -1, 7))
        half = split_half and k < len(units) - 1
        x, out = (h[:, :units[k] // 2], h[:, units[k] // 2:]) if half else (h, h)
        ref.append(out.sum(-1))
    want = torch.cat(ref, 1)
    assert want.shape[1] == cin.output_dim == (3 + 2 + 3 if split_half else 6 + 4 + 3)
    torch.testing.assert_close(cin(e), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bilinear_type", ["field_all", "field_each", "field_interaction"])
def test_bilinear_is_the_papers_formula(bilinear_type: str) -> None:
    """FiBiNET's p_ij = (v_i W) * v_j for every pair i < j in triu order, W per type: one, per
    left field, per pair (computed left field by left field, without gathering the pairs)."""
    from mtkd.models.layers import Bilinear

    torch.manual_seed(0)
    layer = Bilinear(6, 4, bilinear_type)
    e = torch.randn(3, 6, 4, requires_grad=True)
    ref = []
    for p, (i, j) in enumerate(zip(*torch.triu_indices(6, 6, 1).tolist())):
        w = layer.weight[{"field_all": 0, "field_each": i, "field_interaction": p}[bilinear_type]]
        ref.append((e[:, i] @ w) * e[:, j])
    ref = torch.stack(ref, 1)
    out = layer(e)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(ref)
    want = torch.autograd.grad((ref * g).sum(), [e, layer.weight])
    got = torch.autograd.grad((out * g).sum(), [e, layer.weight])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_bilinear_weights_start_at_the_scale_of_one_d_by_d_matrix() -> None:
    """Each pair's W is initialised like one D x D xavier matrix (std D^-1/2), whatever the pair count."""
    from mtkd.models.layers import Bilinear

    torch.manual_seed(0)
    for kind in Bilinear.TYPES:
        w = Bilinear(39, 10, kind).weight
        assert abs(float(w.detach().std()) - 10 ** -0.5) < 0.05, kind


def test_nfm_bi_interaction_takes_its_own_dropout() -> None:
    """The authors drop 0.5 of the bi-interaction vector and 0.2 after the hidden layer."""
    model = build_model("nfm", feature_map(), dropout=0.2, bi_dropout=0.5)
    assert [m.p for m in model.bi if isinstance(m, torch.nn.Dropout)] == [0.5]
    assert [m.p for m in model.mlp.modules() if isinstance(m, torch.nn.Dropout)] == [0.2]
    assert [m.p for m in build_model("nfm", feature_map(), dropout=0.2).bi if isinstance(m, torch.nn.Dropout)] == [0.2]


def test_dcn_mix_gates_each_layer_with_its_own_weights() -> None:
    """DCN-Mix against a plain loop over layers and experts (the transplant test shares one gate
    across layers, as DeepCTR does, so it cannot tell layers' gates apart)."""
    torch.manual_seed(0)
    cross = build_model("dcnv2", feature_map(), low_rank=3, num_experts=2, structure="crossnet_only").cross
    with torch.no_grad():
        cross.gate.normal_()
        cross.bias.normal_()
        x0 = torch.randn(5, cross.U.shape[2])
        x = x0
        for layer in range(cross.U.shape[0]):
            out = torch.zeros_like(x)
            for i in range(len(x)):
                g = torch.softmax(cross.gate[layer] @ x[i], 0)
                for e in range(2):
                    v = torch.tanh(cross.C[layer, e] @ torch.tanh(cross.V[layer, e].T @ x[i]))
                    out[i] += g[e] * x0[i] * (cross.U[layer, e] @ v + cross.bias[layer])
            x = out + x
        torch.testing.assert_close(cross(x0), x, atol=1e-5, rtol=1e-5)
