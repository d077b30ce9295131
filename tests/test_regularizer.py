"""Embedding L2: lambda * sum ||W||^2 over whole dense tables (FuxiCTR / DeepCTR-Torch meaning)."""

from __future__ import annotations

import torch
from conftest import PRESETS
from test_models import feature_map, loss_of, random_batch

from mtkd.config import load_train_config
from mtkd.data.prepare import prepare
from mtkd.data.schema import load_schema
from mtkd.data.synthetic import write_synthetic
from mtkd.models import build_model
from mtkd.train.optimizers import EmbeddingL2
from mtkd.train.run import load_run, train_run

LAM = 3e-3


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_gradient_equals_the_full_table_penalty_in_the_loss() -> None:
    fmap = feature_map()
    for name in ("dnn", "fm", "deepfm", "lr"):
        torch.manual_seed(0)
        model = build_model(name, fmap, embedding_regularizer=LAM)
        batch = random_batch(16, fmap)
        # reference: the penalty written into the loss, over every embedding tensor
        penalty = sum((p * p).sum() for p in model.l2_parameters())
        (loss_of(model(batch), batch, fmap) + LAM * penalty).backward()
        want = grads(model)
        model.zero_grad(set_to_none=True)
        out = model(batch)
        assert float(model.reg_loss()) == 0.0  # dense tables: nothing through the loss
        loss_of(out, batch, fmap).backward()
        l2 = EmbeddingL2([model])
        assert l2
        l2.apply()
        got = grads(model)
        assert got.keys() == want.keys()
        for k in want:
            torch.testing.assert_close(got[k], want[k], msg=f"{name}: {k}")


def test_rows_a_batch_never_touches_are_penalised_too() -> None:
    fmap = feature_map()
    model = build_model("dnn", fmap, embedding_regularizer=LAM)
    batch = random_batch(4, fmap)
    batch.cat[:] = 1  # one id per field: every other row gets no data gradient
    loss_of(model(batch), batch, fmap).backward()
    table = model.embedding.table.weight
    untouched = table.grad[5].clone()
    assert torch.count_nonzero(untouched) == 0
    EmbeddingL2([model]).apply()
    torch.testing.assert_close(table.grad[5], 2 * LAM * table[5].detach())


def test_no_coefficient_no_penalty_and_sparse_tables_left_to_reg_loss() -> None:
    fmap = feature_map()
    assert not EmbeddingL2([build_model("dnn", fmap)])
    sparse = build_model("dnn", fmap, sparse=True, embedding_regularizer=LAM)
    covered = {id(p) for _, ps in EmbeddingL2([sparse]).groups for p in ps}
    assert all(id(p) not in covered for p in sparse.sparse_parameters())
    assert covered  # the numeric field vectors are dense tensors, penalised whole
    batch = random_batch(8, fmap)
    sparse(batch)
    assert float(sparse.reg_loss().detach()) > 0  # the touched rows of the sparse tables


def test_a_shared_table_gets_each_models_coefficient() -> None:
    fmap = feature_map()
    student = build_model("dnn", fmap, embedding_regularizer=LAM)
    teacher = build_model("dnn", fmap, embedding_regularizer=2 * LAM)
    teacher.embedding = student.embedding  # as co-training's share_embedding does
    l2 = EmbeddingL2([student, teacher])
    alphas = {id(p): a for a, ps in l2.groups for p in ps}
    assert alphas[id(student.embedding.table.weight)] == 2 * LAM + 2 * 2 * LAM


def test_training_with_the_penalty_shrinks_the_tables(tmp_path) -> None:
    write_synthetic(tmp_path / "s.csv", rows=3000, seed=5)
    prepare(load_schema(PRESETS / "synthetic.yaml"), tmp_path / "ds", tmp_path / "s.csv")
    norms = {}
    for lam in (0.0, 1e-1):
        cfg = load_train_config(None, ["params.embedding_dim=4", "batch_size=256",
                                       "epochs=2", "patience=5", "device=cpu",
                                       f"params.embedding_regularizer={lam}"], model="fm")
        train_run(cfg, tmp_path / "ds", tmp_path / f"r{lam}", progress=False, log=lambda s: None)
        model = load_run(tmp_path / f"r{lam}")[2]
        norms[lam] = float(sum((p.detach() ** 2).sum() for p in model.l2_parameters()))
    assert norms[1e-1] < 0.3 * norms[0.0], norms
