"""The row-wise lazy Adam does what torch.optim.SparseAdam does."""

from __future__ import annotations

import torch

from mtkd.train.rowwise_adam import RowWiseAdam


def test_matches_sparse_adam_with_duplicate_ids():
    torch.manual_seed(0)
    a = torch.nn.Embedding(50, 4, sparse=True)
    b = torch.nn.Embedding(50, 4, sparse=True)
    b.load_state_dict(a.state_dict())
    oa, ob = torch.optim.SparseAdam(a.parameters(), lr=0.01), RowWiseAdam(b.parameters(), lr=0.01)
    for step in range(5):
        ids = torch.randint(0, 50, (64,))  # many duplicates
        w = torch.randn(64, 4)
        for emb, opt in ((a, oa), (b, ob)):
            opt.zero_grad()
            (emb(ids) * w).sum().backward()
            opt.step()
        assert torch.allclose(a.weight, b.weight, atol=1e-6), step
    assert ob.state[b.weight]["step"] == 5


def test_state_dict_has_no_scratch_and_reloads():
    emb = torch.nn.Embedding(10, 2, sparse=True)
    opt = RowWiseAdam(emb.parameters(), lr=0.1)
    emb(torch.tensor([1, 1, 3])).sum().backward()
    opt.step()
    sd = opt.state_dict()
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    opt2 = RowWiseAdam(emb.parameters(), lr=0.1)
    opt2.load_state_dict(sd)
    assert opt2.state[emb.weight]["step"] == 1


def test_dense_gradient_is_plain_adam():
    torch.manual_seed(1)
    a = torch.nn.Embedding(20, 3)
    b = torch.nn.Embedding(20, 3)
    b.load_state_dict(a.state_dict())
    oa, ob = torch.optim.Adam(a.parameters(), lr=0.01), RowWiseAdam(b.parameters(), lr=0.01)
    for _ in range(4):
        ids = torch.randint(0, 20, (32,))
        for emb, opt in ((a, oa), (b, ob)):
            opt.zero_grad()
            emb(ids).pow(2).sum().backward()
            opt.step()
    assert torch.allclose(a.weight, b.weight, atol=1e-6)


def test_weight_decay_is_adams_or_adamws_on_the_touched_rows():
    """optimizer.weight_decay was dropped for sparse tables. Lazy: a batch touching every row
    equals torch's Adam (L2 in the gradient) / AdamW (decoupled); untouched rows do not decay."""
    for decoupled, reference in ((False, torch.optim.Adam), (True, torch.optim.AdamW)):
        torch.manual_seed(2)
        a = torch.nn.Embedding(20, 3)
        b = torch.nn.Embedding(20, 3, sparse=True)
        b.load_state_dict(a.state_dict())
        oa = reference(a.parameters(), lr=0.05, weight_decay=0.1)
        ob = RowWiseAdam(b.parameters(), lr=0.05, weight_decay=0.1, decoupled=decoupled)
        for _ in range(4):
            ids = torch.cat([torch.arange(20), torch.randint(0, 20, (30,))])  # every row, some twice
            w = torch.randn(50, 3)
            for emb, opt in ((a, oa), (b, ob)):
                opt.zero_grad()
                (emb(ids) * w).sum().backward()
                opt.step()
        torch.testing.assert_close(a.weight, b.weight, atol=1e-6, rtol=1e-5)
        before = b.weight.detach().clone()
        ob.zero_grad()
        b(torch.tensor([3])).sum().backward()
        ob.step()
        changed = (b.weight != before).any(1)
        assert changed.tolist() == [i == 3 for i in range(20)]  # only the row the batch touched
