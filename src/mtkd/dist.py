"""torch.distributed for `torchrun`: process group from the environment, gradient averaging.

    torchrun --standalone --nproc_per_node 4 -m mtkd train --data DIR --model deepfm --out runs/x

Each rank reads its own shard of every epoch's permutation (`BatchLoader`), computes the loss of
its batch, and the gradients of every trained parameter (the model's and the objective's, e.g.
the teacher gate) are averaged over ranks after backward, so one step equals a step on the union
of the ranks' batches (world_size x batch_size rows). Dense gradients go in one flat all-reduce;
sparse embedding gradients are all-gathered (row ids and rows), which keeps the row-wise
optimiser's "touch only the rows in the batch". Evaluation is sharded: each rank scores a block
of rows and the predictions are gathered, so every rank computes the same metrics and
early-stopping decisions agree without a broadcast; rank 0 writes.
Gloo on CPU, NCCL on GPU (one GPU per rank, `LOCAL_RANK`).

The gradients are averaged by hand rather than through DistributedDataParallel because the
objective's own modules (gate, co-trained teachers) train beside the model, and the policy of
reinforced selection steps its own optimiser: it averages its REINFORCE gradient the same way, so
each policy step learns from every rank's rewards.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from mtkd.errors import MtkdError


def world_from_env(device_type: str = "cpu") -> tuple[int, int]:
    """(rank, world size); joins the process group on the first call under torchrun: NCCL when
    the run trains on CUDA (one GPU per rank, `LOCAL_RANK`), gloo otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        use_cuda = device_type == "cuda"
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return dist.get_rank(), dist.get_world_size()


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def leave_world(world: int) -> None:
    """End of a torchrun job: wait for every rank, then close the process group, so no rank
    exits while a peer is still inside the last collective (gloo aborts the peer then)."""
    if world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def end_process() -> None:
    """The last act of a torchrun worker: exit without the interpreter's teardown. Gloo's
    threads can still be winding down after the final collective, and destroying them with the
    interpreter aborts the process ("terminate called without an active exception", seen in 3
    of 20 two-rank runs even after `leave_world`); every file is already written and synced."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def sync_gradients(params: list[nn.Parameter]) -> None:
    """Average the gradients over ranks when running under torchrun; nothing in one process."""
    if _world() > 1:
        average_gradients(params, _world())


def _world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def _comm_device(t: Tensor) -> torch.device:
    """NCCL moves CUDA tensors only; gloo takes CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_sum(t: Tensor) -> Tensor:
    """The element-wise sum over ranks (evaluation accumulators); `t` itself in one process."""
    if _world() <= 1:
        return t
    out = t.to(_comm_device(t))
    dist.all_reduce(out)
    return out.to(t.device)


def all_sum_named(values: dict[str, float]) -> dict[str, float]:
    """Named sums over ranks (training logs); a name a rank did not log counts as 0 there, so
    ranks whose objectives logged different keys still meet in one all-reduce."""
    world = _world()
    if world <= 1:
        return dict(values)
    names: list[Any] = [None] * world
    dist.all_gather_object(names, sorted(values))
    union = sorted(set().union(*names))
    summed = all_sum(torch.tensor([values.get(k, 0.0) for k in union], dtype=torch.float64))
    return dict(zip(union, summed.tolist()))


def all_gather_rows(*ts: Tensor) -> list[Tensor]:
    """Every rank's rows of each tensor, concatenated in rank order (the ranks may hold different
    counts; the tensors of one call share theirs, so the counts are gathered once); the tensors
    themselves in one process. Sharded evaluation and sparse gradients gather with it."""
    world = _world()
    if world <= 1:
        return list(ts)
    dev = _comm_device(ts[0])
    n = torch.tensor([ts[0].shape[0]], device=dev)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    counts = [int(c.item()) for c in sizes]
    out = []
    for t in ts:
        padded = torch.zeros((max(counts), *t.shape[1:]), dtype=t.dtype, device=dev)
        padded[: t.shape[0]] = t
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded)
        out.append(torch.cat([p[:c] for p, c in zip(parts, counts)]).to(t.device))
    return out


def average_gradients(params: list[nn.Parameter], world: int) -> None:
    """Average every parameter's gradient over ranks in place (a missing gradient counts as zero)."""
    dense = [p for p in params if not (p.grad is not None and p.grad.is_sparse) and not _is_sparse_table(p)]
    dense_ids = {id(p) for p in dense}
    sparse = [p for p in params if id(p) not in dense_ids]
    if dense:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in dense]
        flat = torch._utils._flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        flat /= world
        for p, g in zip(dense, torch._utils._unflatten_dense_tensors(flat, grads)):
            p.grad = g if p.grad is None else p.grad.copy_(g)
    for p in sparse:
        p.grad = _gather_sparse(p, world)


def _is_sparse_table(p: Tensor) -> bool:
    return bool(getattr(p, "_mtkd_sparse_table", False))


def mark_sparse_tables(modules: list[nn.Module]) -> None:
    """Tag sparse embedding weights, so a rank whose batch left one without a gradient still joins the gather."""
    for mod in modules:
        for m in mod.modules():
            if isinstance(m, nn.Embedding) and m.sparse:
                m.weight._mtkd_sparse_table = True  # type: ignore[attr-defined]


def _gather_sparse(p: nn.Parameter, world: int) -> Tensor:
    g = p.grad
    if g is None:
        idx = torch.zeros((1, 0), dtype=torch.long, device=p.device)
        val = torch.zeros((0, *p.shape[1:]), dtype=p.dtype, device=p.device)
    else:  # uncoalesced is fine: the row-wise optimiser sums duplicate rows
        idx, val = g._indices(), g._values()
    idx_t, val = all_gather_rows(idx.t(), val)
    return torch.sparse_coo_tensor(idx_t.t(), val / world, p.shape, check_invariants=False)  # ids from our own tables


def check_in_sync(params: list[Tensor], world: int) -> None:
    """Refuse to finish if the ranks' weights differ (a gradient that escaped averaging)."""
    if world <= 1 or not params:
        return
    with torch.no_grad():
        s = torch.stack([p.detach().double().sum() for p in params])
    lo, hi = s.clone(), s.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    if not torch.equal(lo, hi):
        raise MtkdError("torch.distributed ranks ended with different weights; a parameter trained outside the "
                        "averaged set (report this with the config)")
