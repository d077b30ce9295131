"""Training and inference throughput: mtkd vs DeepCTR-Torch (and FuxiCTR where installed).

    .venv/bin/python benchmarks/train_bench.py                                  # everything, ~15 min on 2 cores
    .venv/bin/python benchmarks/train_bench.py --vocab small --models dnn --steps 10 --no-trainer
    .venv/bin/python benchmarks/train_bench.py --bf16 --profile                 # + bf16 column, AUC check, op profile

Setup (the issue's): DNN, DeepFM and DCN with embedding 16, MLP 400-400-400, Adam 1e-3, batch
4096, on Criteo-shaped synthetic rows (26 categorical, 13 numeric) built in memory. Two vocabulary
sizes: `small` (about 300k ids in all: the MLP dominates) and `realistic` (about 10M ids in all,
like full Criteo: updating the embedding tables dominates). Per-field sizes follow the Criteo
Kaggle cardinalities, with every field capped at one value chosen so that the total hits the
target (as hashing the large fields into a fixed number of buckets does). Ids are drawn from a
bounded power law (Zipf, s = 1.1) over each field; id = frequency rank + 2, as an encoder that
sorts its vocabulary by count assigns them. Labels come from a logistic model of a few fields, a
pairwise interaction and the numeric columns, so that AUC means something.

What is measured, per vocabulary and model, all on the same rows in the same process:

  mtkd dense   the trainer's hot path (model(batch), BCE-with-logits via `Supervised.loss`,
               zero_grad, backward, every optimiser's step) with `sparse=False`: Adam everywhere.
  mtkd sparse  the same with `sparse=True`: SparseAdam on the embedding tables, Adam on the rest
               (`mtkd.train.trainer.build_optimizers`).
  mtkd bf16    (--bf16) the faster of the two under torch.autocast(bfloat16), as `amp: bf16` does.
  trainer      (--no-trainer to skip) `Trainer.fit` for one epoch over a prepared dataset directory
               written in the store format, reading `train.samples_per_s` (loader included); it uses
               the faster fp32 variant above.
  DeepCTR      DeepCTR-Torch 0.3.0 on the same rows: the faster of `model.fit(..., verbose=0)` and a
               manual loop through `model(x)` with its own loss, regularisation term and optimiser.
               DNN = `PNN(use_inner=False, use_outter=False)` (DeepCTR-Torch has no plain DNN; this
               is embeddings + dense values -> MLP -> logit); DeepFM; DCN with cross_num=3 (mtkd's
               default; DeepCTR's is 2). L2 regularisation is 0 for both libraries (DeepCTR's default
               1e-5 on embeddings sums squares of whole tables each step, which would flatter mtkd).
               DeepCTR feeds numeric values straight into its MLP (input 26*16+13 = 429) where mtkd
               embeds them (39*16 = 624), so mtkd does ~1.4x the first layer's FLOPs.

Steps are timed after `--warmup` steps (optimiser state allocated), `--steps` of them, on
distinct batches. FLOPs per sample are counted from the model (2*in*out per nn.Linear, plus the
FM / cross-network element-wise work), training = 3x forward. The compute ceiling is the measured
float32 matmul rate (higher of MLP-shaped mm and a 2048^2 square mm); each model's throughput is
reported as a fraction of ceiling / (training FLOPs per sample).

Targets (issue): small vocabulary: DNN >= 75% of the fp32 ceiling, DeepFM and DCN >= 1.25x
DeepCTR-Torch; realistic vocabulary: all three >= 3x DeepCTR-Torch. Exit status 1 when one fails.
Timings on 2 cores move with the load: `os.getloadavg()` is printed with every table.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mtkd.train.trainer import configure_torch

configure_torch()  # flush denormals before any torch op: ~10x on CPU with 1e-4 embeddings

from torch import nn  # noqa: E402

from mtkd.config import load_train_config  # noqa: E402
from mtkd.data.batch import Batch  # noqa: E402
from mtkd.data.feature_map import CategoricalField, FeatureMap  # noqa: E402
from mtkd.models import build_model  # noqa: E402
from mtkd.train.metrics import auc as auc_score  # noqa: E402
from mtkd.train.objectives import Supervised  # noqa: E402
from mtkd.train.trainer import build_optimizers  # noqa: E402

BATCH = 4096
EMB = 16
HIDDEN = [400, 400, 400]
N_CAT, N_NUM = 26, 13
ZIPF_S = 1.1
# Criteo Kaggle (display advertising challenge) distinct values of C1..C26.
CRITEO_CARD = [1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27, 14992,
               5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572]
VOCABS = {"small": 300_000, "realistic": 10_000_000}
MODELS = ("dnn", "deepfm", "dcn")
TARGET_DNN_FRAC = 0.75
TARGET_SMALL_RATIO = 1.25
TARGET_REAL_RATIO = 3.0


def log(msg: str = "") -> None:
    print(msg, flush=True)


def loadavg() -> str:
    a = os.getloadavg()
    return f"load average {a[0]:.2f} {a[1]:.2f} {a[2]:.2f} (os.getloadavg)"


# ------------------------------------------------------------------------------------------ data


def vocab_sizes(total: int) -> list[int]:
    """Per-field vocabulary (padding and OOV included): Criteo cardinalities capped at one value."""
    lo, hi = 1, max(CRITEO_CARD)
    while lo < hi:  # smallest cap whose total reaches the target
        mid = (lo + hi) // 2
        if sum(min(c, mid) + 2 for c in CRITEO_CARD) >= total:
            hi = mid
        else:
            lo = mid + 1
    return [min(c, lo) + 2 for c in CRITEO_CARD]


@dataclass
class Data:
    name: str
    fmap: FeatureMap
    vocab: list[int]
    cat: np.ndarray  # [N, 26] int64, ids in [2, vocab)
    num: np.ndarray  # [N, 13] float32
    label: np.ndarray  # [N] float32
    train_rows: int
    unique_per_batch: float = 0.0

    def batches(self, start_step: int, n: int, device: torch.device) -> list[Batch]:
        out = []
        for k in range(start_step, start_step + n):
            lo = (k * BATCH) % max(BATCH, self.train_rows - BATCH + 1)
            sl = slice(lo, lo + BATCH)
            out.append(Batch(label=torch.from_numpy(self.label[sl]), index=torch.arange(lo, lo + BATCH),
                             cat=torch.from_numpy(self.cat[sl]), num=torch.from_numpy(self.num[sl])).to(device))
        return out


def make_data(name: str, total_vocab: int, train_rows: int, test_rows: int, seed: int) -> Data:
    vocab = vocab_sizes(total_vocab)
    n = train_rows + test_rows
    rng = np.random.default_rng([seed, total_vocab])
    cat = np.empty((n, N_CAT), dtype=np.int64)
    for f, v in enumerate(vocab):
        m = v - 2  # values of this field
        u = rng.random(n)
        a = 1.0 - ZIPF_S  # bounded continuous power law on [1, m + 1), floored: rank 0 is the most frequent
        x = ((np.power(m + 1.0, a) - 1.0) * u + 1.0) ** (1.0 / a)
        cat[:, f] = np.minimum(np.floor(x).astype(np.int64) - 1, m - 1) + 2
    num = np.log1p(np.floor(np.exp(rng.normal(1.5, 1.4, (n, N_NUM))))).astype(np.float32)
    # Ground truth: first-order weights on 8 fields (ranks < 5000), one pairwise interaction, numerics.
    logit = np.full(n, -1.3)
    for f in (1, 2, 5, 8, 13, 16, 19, 22):
        w = rng.normal(0.0, 0.7, 5000)
        r = cat[:, f] - 2
        logit += np.where(r < 5000, w[np.minimum(r, 4999)], 0.0)
    pair = rng.normal(0.0, 0.8, (16, 16))
    logit += pair[(cat[:, 5] - 2) % 16, (cat[:, 13] - 2) % 16]
    logit += (num - num.mean(0)) @ rng.normal(0.0, 0.25, N_NUM)
    label = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
    fmap = FeatureMap(categorical=tuple(CategoricalField(f"C{i + 1}", v) for i, v in enumerate(vocab)),
                      numeric=tuple(f"I{i + 1}" for i in range(N_NUM)))
    d = Data(name, fmap, vocab, cat, num, label, train_rows)
    offs = np.concatenate([[0], np.cumsum(vocab)[:-1]])
    d.unique_per_batch = float(np.mean([np.unique(cat[k * BATCH:(k + 1) * BATCH] + offs).size for k in range(5)]))
    return d


def write_dataset(d: Data, root: Path) -> Path:
    """The rows as a prepared mtkd dataset directory (store format: ArrayWriter + manifest)."""
    from mtkd.data.atomic import atomic_write_text
    from mtkd.data.store import MANIFEST, STORE_VERSION, ArrayWriter, dataset_checksum

    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    parts = {"train": slice(0, d.train_rows), "valid": slice(d.train_rows, len(d.label))}
    splits = {}
    for split, sl in parts.items():
        (root / split).mkdir()
        arrays = {"cat": d.cat[sl].astype(np.int32), "num": d.num[sl], "label": d.label[sl]}
        metas = {}
        for key, arr in arrays.items():
            w = ArrayWriter(root / split / f"{key}.npy", arr.dtype, arr.shape[1:])
            w.append(arr)
            metas[key] = w.close()
        splits[split] = {"rows": int(arrays["label"].shape[0]), "arrays": metas,
                         "label_rate": round(float(arrays["label"].mean()), 6)}
    manifest = {"store_version": STORE_VERSION, "name": f"train_bench_{d.name}", "task": "binary",
                "checksum": dataset_checksum(splits, "train_bench"), "feature_map": d.fmap.to_dict(),
                "vocab_sizes": {f.name: f.vocab_size for f in d.fmap.categorical}, "splits": splits}
    atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=1))
    return root


# ------------------------------------------------------------------------------------------ compute ceiling


def _rate(fn, flops: float, bursts: int = 5, min_s: float = 0.25) -> float:
    """GFLOP/s: best of `bursts` runs of at least `min_s` seconds each (robust to other load)."""
    fn()
    fn()
    best = 0.0
    for _ in range(bursts):
        reps, t0 = 0, time.perf_counter()
        while True:
            fn()
            reps += 1
            dt = time.perf_counter() - t0
            if dt >= min_s and reps >= 3:
                break
        best = max(best, reps * flops / dt / 1e9)
    return best


def measure_ceiling(device: torch.device) -> dict[str, float]:
    out = {}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for dtype, tag in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        g = torch.Generator().manual_seed(0)
        x0 = torch.randn(BATCH, N_CAT * EMB + N_NUM * EMB, generator=g).to(device, dtype)
        ws = [torch.randn(a, b, generator=g).to(device, dtype) * 0.05
              for a, b in ((x0.shape[1], 400), (400, 400), (400, 400))]
        mlp_flops = sum(2.0 * BATCH * w.shape[0] * w.shape[1] for w in ws)

        def mlp():
            h = x0
            for w in ws:
                h = torch.mm(h, w)
            sync()

        a = torch.randn(BATCH, 400, generator=g).to(device, dtype)
        w400 = ws[1]

        def mm400():
            torch.mm(a, w400)
            sync()

        s = torch.randn(2048, 2048, generator=g).to(device, dtype)

        def square():
            torch.mm(s, s)
            sync()

        out[f"{tag}_mlp"] = _rate(mlp, mlp_flops)
        out[f"{tag}_4096x400x400"] = _rate(mm400, 2.0 * BATCH * 400 * 400)
        out[f"{tag}_square2048"] = _rate(square, 2.0 * 2048 ** 3)
    out["fp32_ceiling"] = max(out["fp32_mlp"], out["fp32_4096x400x400"], out["fp32_square2048"])
    return out


def forward_flops(model: nn.Module, fmap: FeatureMap, kind: str) -> float:
    """Per-sample forward FLOPs: 2*in*out per nn.Linear plus the interaction layers' element-wise work."""
    total = 0.0
    for m in model.modules():
        if isinstance(m, nn.Linear):
            total += 2.0 * m.in_features * m.out_features + (m.out_features if m.bias is not None else 0)
    f = fmap.num_fields
    if kind == "deepfm":  # bi-interaction (sum, square, squares, sum) + first-order sum
        total += 4.0 * f * EMB + 2 * f
    if kind == "dcn":  # per cross layer: x0 * s, + b, + x
        total += 3.0 * 3 * f * EMB
    return total


# ------------------------------------------------------------------------------------------ mtkd


@dataclass
class StepTiming:
    samples_per_s: float = float("nan")
    fwd_ms: float = float("nan")
    bwd_ms: float = float("nan")
    opt_ms: float = float("nan")
    zero_ms: float = float("nan")
    note: str = ""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class RowWiseAdam(torch.optim.Optimizer):
    """Prototype (--proto), not part of mtkd: SparseAdam's lazy update without `grad.coalesce()`.

    The batch's ids are de-duplicated without sorting (dedupe="slot": a persistent int64 slot per
    table row; each id writes its position, reads back the winner, winners are the distinct rows),
    or with `torch.unique(sorted=True, return_inverse=True)` (dedupe="sort"); their gradient rows
    are summed with `index_add_`, and only those rows of the table and of its two moment buffers
    are read and written. Same arithmetic as torch.optim.SparseAdam (global step for bias
    correction)."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, dedupe: str = "slot"):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))
        self.dedupe = dedupe

    def _rows(self, st: dict, idx: torch.Tensor, n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.dedupe == "sort":
            return torch.unique(idx, sorted=True, return_inverse=True)
        if "slot" not in st:
            st["slot"] = torch.empty(n_rows, dtype=torch.long, device=idx.device)
        slot = st["slot"]
        pos = torch.arange(idx.numel(), device=idx.device)
        slot[idx] = pos  # duplicates: one writer wins, and every duplicate reads the same winner back
        winner = slot[idx]
        is_first = winner == pos
        rows = idx[is_first]
        compact = torch.cumsum(is_first, 0) - 1  # winner position -> 0..U-1
        return rows, compact[winner]

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, (b1, b2), eps = group["lr"], group["betas"], group["eps"]
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["exp_avg"] = torch.zeros_like(p)
                    st["exp_avg_sq"] = torch.zeros_like(p)
                st["step"] += 1
                if g.is_sparse:
                    idx, vals = g._indices()[0], g._values()
                    rows, inv = self._rows(st, idx, p.shape[0])
                    gs = vals.new_zeros(rows.numel(), vals.shape[1]).index_add_(0, inv, vals)
                else:
                    rows = torch.arange(p.shape[0], device=p.device)
                    gs = g
                m = st["exp_avg"].index_select(0, rows).lerp_(gs, 1 - b1)
                v = st["exp_avg_sq"].index_select(0, rows).mul_(b2).addcmul_(gs, gs, value=1 - b2)
                st["exp_avg"].index_copy_(0, rows, m)
                st["exp_avg_sq"].index_copy_(0, rows, v)
                bc1, bc2 = 1 - b1 ** st["step"], 1 - b2 ** st["step"]
                denom = v.div_(bc2).sqrt_().add_(eps)
                p.index_add_(0, rows, m.div_(denom), alpha=-lr / bc1)


def build_mtkd(kind: str, d: Data, sparse: bool, device: torch.device, seed: int = 0, proto: bool = False):
    torch.manual_seed(seed)
    model = build_model(kind, d.fmap, embedding_dim=EMB, hidden_units=list(HIDDEN), sparse=sparse).to(device)
    cfg = load_train_config(None, [], model=kind)
    if not proto:
        return model, build_optimizers(model, [], cfg)
    # Prototype of the suggested build_optimizers: fused Adam on dense parameters, row-wise lazy
    # Adam on sparse tables.
    tables = [m.weight for m in model.modules() if isinstance(m, nn.Embedding) and m.sparse]
    ids = {id(t) for t in tables}
    dense = [q for q in model.parameters() if id(q) not in ids]
    opts = [torch.optim.Adam(dense, lr=cfg.optimizer.lr, fused=True)]
    if tables:
        opts.append(RowWiseAdam(tables, lr=cfg.optimizer.sparse_lr or cfg.optimizer.lr))
    return model, opts


def mtkd_step(model, opts, objective, b: Batch, amp: bool, device: torch.device, t: list[float] | None = None):
    ctx = torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    t0 = time.perf_counter()
    with ctx:
        out = model(b)
        loss, _ = objective.loss(model, b, out)
    if t is not None:
        _sync(device)
    t1 = time.perf_counter()
    for o in opts:
        o.zero_grad(set_to_none=True)
    t2 = time.perf_counter()
    loss.backward()
    if t is not None:
        _sync(device)
    t3 = time.perf_counter()
    for o in opts:
        o.step()
    if t is not None:
        _sync(device)
        t4 = time.perf_counter()
        t[0] += t1 - t0
        t[1] += t2 - t1
        t[2] += t3 - t2
        t[3] += t4 - t3
    return loss


def time_mtkd(kind: str, d: Data, sparse: bool, amp: bool, steps: int, warmup: int, repeat: int,
              device: torch.device, proto: bool = False) -> StepTiming:
    """Best of `repeat` runs of `steps` steps (on distinct batches) after `warmup` steps. Phases are
    timed inside the same runs (perf_counter reads; on CUDA each phase boundary synchronises)."""
    model, opts = build_mtkd(kind, d, sparse, device, proto=proto)
    objective = Supervised("binary")
    model.train()
    for b in d.batches(0, warmup, device):
        mtkd_step(model, opts, objective, b, amp, device)
    best = StepTiming(samples_per_s=0.0)
    for r in range(repeat):
        batches = d.batches(warmup + r * steps, steps, device)
        t = [0.0, 0.0, 0.0, 0.0]
        _sync(device)
        t0 = time.perf_counter()
        for b in batches:
            mtkd_step(model, opts, objective, b, amp, device, t)
        _sync(device)
        dt = time.perf_counter() - t0
        if steps * BATCH / dt > best.samples_per_s:
            best = StepTiming(steps * BATCH / dt, 1e3 * t[0] / steps, 1e3 * t[2] / steps, 1e3 * t[3] / steps,
                              1e3 * t[1] / steps)
    del model, opts, batches
    gc.collect()
    return best


def time_inference(model: nn.Module, d: Data, device: torch.device, amp: bool = False,
                   reps_1: int = 300, reps_256: int = 100, batches_4096: int = 12) -> dict[str, float]:
    model.eval()
    ctx = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if amp else contextlib.nullcontext
    big = d.batches(0, batches_4096, device)
    lo = d.train_rows
    b256 = Batch(label=torch.from_numpy(d.label[lo:lo + 256]), index=torch.arange(256),
                 cat=torch.from_numpy(d.cat[lo:lo + 256]), num=torch.from_numpy(d.num[lo:lo + 256])).to(device)
    b1 = Batch(label=b256.label[:1], index=b256.index[:1], cat=b256.cat[:1], num=b256.num[:1])
    out = {}
    with torch.inference_mode(), ctx():
        for b in big[:2]:
            model(b)
        _sync(device)
        t0 = time.perf_counter()
        for b in big:
            model(b)
        _sync(device)
        out["samples_per_s"] = batches_4096 * BATCH / (time.perf_counter() - t0)
        for name, b, reps in (("p50_1_ms", b1, reps_1), ("p50_256_ms", b256, reps_256)):
            for _ in range(10):
                model(b)
            lat = []
            for _ in range(reps):
                s = time.perf_counter()
                model(b).logits.sum().item()
                lat.append(time.perf_counter() - s)
            out[name] = 1e3 * statistics.median(lat)
    model.train()
    return out


def run_trainer(kind: str, root: Path, sparse: bool, device: torch.device, workdir: Path) -> float:
    from mtkd.data.store import Dataset
    from mtkd.train.trainer import Trainer

    cfg = load_train_config(None, [], model=kind)
    cfg = cfg.model_copy(update={"epochs": 1, "device": device.type,
                                 "params": {"embedding_dim": EMB, "hidden_units": list(HIDDEN), "sparse": sparse}})
    ds = Dataset(root)
    torch.manual_seed(cfg.seed)
    model = build_model(kind, ds.feature_map, **cfg.params)
    run = workdir / f"run_{kind}"
    shutil.rmtree(run, ignore_errors=True)
    tr = Trainer(cfg, ds, model, Supervised("binary"), run, device=device, log=lambda s: None, progress=False)
    summary = tr.fit()
    del tr, model
    shutil.rmtree(run, ignore_errors=True)
    gc.collect()
    return float(summary["train_samples_per_s"])


def auc_check(kind: str, d: Data, sparse: bool, device: torch.device, proto: bool = False) -> tuple[float, float]:
    """One epoch fp32 and one epoch bf16 from the same init on the same batches; test AUC of each."""
    aucs = []
    n_steps = d.train_rows // BATCH
    lo = d.train_rows
    test = Batch(label=torch.from_numpy(d.label[lo:]), index=torch.arange(len(d.label) - lo),
                 cat=torch.from_numpy(d.cat[lo:]), num=torch.from_numpy(d.num[lo:])).to(device)
    for amp in (False, True):
        model, opts = build_mtkd(kind, d, sparse, device, seed=1, proto=proto)
        objective = Supervised("binary")
        for k in range(0, n_steps, 16):
            for b in d.batches(k, min(16, n_steps - k), device):
                mtkd_step(model, opts, objective, b, amp, device)
        model.eval()
        ctx = torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            logits = model(test).logits.float().cpu().numpy()
        aucs.append(auc_score(d.label[lo:], logits))
        del model, opts
        gc.collect()
    return aucs[0], aucs[1]


def profile_mtkd(kind: str, d: Data, sparse: bool, amp: bool, device: torch.device, steps: int = 4,
                 top: int = 14, proto: bool = False) -> str:
    from torch.profiler import ProfilerActivity, profile

    model, opts = build_mtkd(kind, d, sparse, device, proto=proto)
    objective = Supervised("binary")
    for b in d.batches(0, 3, device):
        mtkd_step(model, opts, objective, b, amp, device)
    batches = d.batches(3, steps, device)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for b in batches:
            mtkd_step(model, opts, objective, b, amp, device)
        _sync(device)
    ev = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ev)
    lines = [f"    {'op':<44} {'self ms/step':>12} {'share':>6} {'calls/step':>10}"]
    for e in ev[:top]:
        lines.append(f"    {e.key[:44]:<44} {e.self_cpu_time_total / 1e3 / steps:>12.1f} "
                     f"{100 * e.self_cpu_time_total / max(total, 1):>5.1f}% {e.count / steps:>10.1f}")
    lines.append(f"    {'(all ops)':<44} {total / 1e3 / steps:>12.1f}")
    del model, opts
    gc.collect()
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ DeepCTR-Torch


def _offline_requests() -> types.ModuleType:
    """Stand-in for `requests` while deepctr_torch imports: its __init__ starts a thread that asks
    PyPI for a newer version. This answers 'no' without a network call (and without printing)."""
    stub = types.ModuleType("requests")
    stub.codes = types.SimpleNamespace(ok=200)
    stub.get = lambda *a, **k: types.SimpleNamespace(status_code=0, text="{}")
    return stub


def import_deepctr():
    if "deepctr_torch" not in sys.modules:
        saved = sys.modules.get("requests")
        sys.modules["requests"] = _offline_requests()
        try:
            import deepctr_torch  # noqa: F401
        finally:
            if saved is None:
                sys.modules.pop("requests", None)
            else:
                sys.modules["requests"] = saved
    import deepctr_torch  # noqa: F401
    from deepctr_torch.inputs import DenseFeat, SparseFeat
    from deepctr_torch.models import DCN, PNN, DeepFM

    return deepctr_torch, SparseFeat, DenseFeat, PNN, DeepFM, DCN


def build_deepctr(kind: str, d: Data, device: torch.device):
    _, SparseFeat, DenseFeat, PNN, DeepFM, DCN = import_deepctr()
    cols = [SparseFeat(f"C{i + 1}", v, embedding_dim=EMB) for i, v in enumerate(d.vocab)] + \
           [DenseFeat(f"I{i + 1}", 1) for i in range(N_NUM)]
    dev = "cuda:0" if device.type == "cuda" else "cpu"
    common = dict(dnn_hidden_units=tuple(HIDDEN), l2_reg_embedding=0.0, l2_reg_dnn=0.0, seed=1024, device=dev)
    if kind == "dnn":
        m = PNN(cols, use_inner=False, use_outter=False, **common)
    elif kind == "deepfm":
        m = DeepFM(cols, cols, l2_reg_linear=0.0, **common)
    else:
        m = DCN(cols, cols, cross_num=3, l2_reg_linear=0.0, l2_reg_cross=0.0, **common)
    m.compile("adam", "binary_crossentropy")  # torch.optim.Adam(self.parameters()), lr 1e-3
    return m


def deepctr_x(d: Data, lo: int, hi: int) -> np.ndarray:
    return np.concatenate([d.cat[lo:hi].astype(np.float32), d.num[lo:hi]], axis=1)


def deepctr_batches(d: Data, start_step: int, n: int, device: torch.device):
    out = []
    for k in range(start_step, start_step + n):
        lo = (k * BATCH) % max(BATCH, d.train_rows - BATCH + 1)
        out.append((torch.from_numpy(deepctr_x(d, lo, lo + BATCH)).to(device),
                    torch.from_numpy(d.label[lo:lo + BATCH]).to(device)))
    return out


def deepctr_manual_step(m, x, y):
    """DeepCTR-Torch's own fit() body minus its DataLoader and metric bookkeeping."""
    y_pred = m(x).squeeze(-1)
    m.optim.zero_grad()
    loss = m.loss_func(y_pred, y, reduction="sum")
    total = loss + m.get_regularization_loss() + m.aux_loss
    total.backward()
    m.optim.step()


def time_deepctr(kind: str, d: Data, steps: int, warmup: int, repeat: int, device: torch.device,
                 with_fit: bool) -> tuple[float, float, nn.Module | None]:
    m = build_deepctr(kind, d, device)
    m.train()
    for x, y in deepctr_batches(d, 0, warmup, device):
        deepctr_manual_step(m, x, y)
    manual = 0.0
    for r in range(repeat):
        batches = deepctr_batches(d, warmup + r * steps, steps, device)
        _sync(device)
        t0 = time.perf_counter()
        for x, y in batches:
            deepctr_manual_step(m, x, y)
        _sync(device)
        manual = max(manual, steps * BATCH / (time.perf_counter() - t0))
        del batches
    fit = float("nan")
    if with_fit:
        m2 = build_deepctr(kind, d, device)
        names = [f"C{i + 1}" for i in range(N_CAT)] + [f"I{i + 1}" for i in range(N_NUM)]

        def as_dict(lo, hi):
            x = deepctr_x(d, lo, hi)
            return {n: x[:, j] for j, n in enumerate(names)}, d.label[lo:hi]

        n_fit = min(steps * BATCH, (d.train_rows - warmup * BATCH) // repeat)
        xw, yw = as_dict(0, warmup * BATCH)
        fit = 0.0
        with contextlib.redirect_stdout(io.StringIO()):
            m2.fit(xw, yw, batch_size=BATCH, epochs=1, verbose=0)
            for r in range(repeat):
                lo = warmup * BATCH + r * n_fit
                xf, yf = as_dict(lo, lo + n_fit)
                _sync(device)
                t0 = time.perf_counter()
                m2.fit(xf, yf, batch_size=BATCH, epochs=1, verbose=0)
                _sync(device)
                fit = max(fit, n_fit / (time.perf_counter() - t0))
        del m2
    gc.collect()
    return manual, fit, m


def time_deepctr_inference(m: nn.Module, d: Data, device: torch.device, batches_4096: int = 12) -> float:
    m.eval()
    xs = [x for x, _ in deepctr_batches(d, 0, batches_4096, device)]
    with torch.inference_mode():
        for x in xs[:2]:
            m(x)
        _sync(device)
        t0 = time.perf_counter()
        for x in xs:
            m(x)
        _sync(device)
    return batches_4096 * BATCH / (time.perf_counter() - t0)


# ------------------------------------------------------------------------------------------ report


@dataclass
class ModelResult:
    kind: str
    flops_fwd: float = 0.0
    dense: StepTiming = field(default_factory=StepTiming)
    sparse: StepTiming = field(default_factory=StepTiming)
    bf16: StepTiming = field(default_factory=StepTiming)
    bf16_sparse: bool = False
    proto_dense: StepTiming = field(default_factory=StepTiming)
    proto_sparse: StepTiming = field(default_factory=StepTiming)
    proto_bf16: StepTiming = field(default_factory=StepTiming)
    proto_bf16_sparse: bool = False
    proto_auc: tuple = ()
    trainer: float = float("nan")
    trainer_sparse: bool = False
    dc_manual: float = float("nan")
    dc_fit: float = float("nan")
    dc_flops_fwd: float = 0.0
    infer: dict = field(default_factory=dict)
    infer_bf16: dict = field(default_factory=dict)
    dc_infer: float = float("nan")
    auc: tuple = ()

    @property
    def best_fp32(self) -> float:
        return max(x for x in (self.dense.samples_per_s, self.sparse.samples_per_s) if not math.isnan(x))

    @property
    def best_any(self) -> float:
        vals = [self.best_fp32] + ([self.bf16.samples_per_s] if not math.isnan(self.bf16.samples_per_s) else [])
        return max(vals)

    @property
    def best_proto(self) -> float:
        vals = [x for x in (self.proto_dense.samples_per_s, self.proto_sparse.samples_per_s,
                            self.proto_bf16.samples_per_s) if not math.isnan(x)]
        return max(vals) if vals else float("nan")

    @property
    def deepctr(self) -> float:
        vals = [v for v in (self.dc_manual, self.dc_fit) if not math.isnan(v)]
        return max(vals) if vals else float("nan")


def fmt(x: float, unit: str = "k") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x / 1e3:.1f}k" if unit == "k" else f"{x:.2f}"


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    w = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    log("  " + " | ".join(h.ljust(w[i]) for i, h in enumerate(headers)))
    log("  " + "-+-".join("-" * x for x in w))
    for r in rows:
        log("  " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)))


def report(vname: str, d: Data, results: list[ModelResult], ceil: float, args) -> None:
    log("")
    log(f"== training samples/s, {vname} vocabulary ({sum(d.vocab):,} ids in all, "
        f"{d.unique_per_batch:,.0f} distinct ids per batch of {BATCH}), device {args.device}, "
        f"threads {torch.get_num_threads()}; {loadavg()}")
    headers = ["model", "mtkd dense", "mtkd sparse", "mtkd bf16", "trainer e2e", "DeepCTR manual/fit",
               "best fp32 / DeepCTR", "best / DeepCTR", "FLOP frac fp32", "FLOP frac best", "GFLOP/sample"]
    rows = []
    for r in results:
        tf = 3 * r.flops_fwd
        rows.append([
            r.kind, fmt(r.dense.samples_per_s), fmt(r.sparse.samples_per_s),
            fmt(r.bf16.samples_per_s) + ((" (sparse)" if r.bf16_sparse else " (dense)")
                                         if not math.isnan(r.bf16.samples_per_s) else ""),
            fmt(r.trainer) + ((" (sparse)" if r.trainer_sparse else " (dense)") if not math.isnan(r.trainer) else ""),
            f"{fmt(r.dc_manual)} / {fmt(r.dc_fit)}",
            f"{r.best_fp32 / r.deepctr:.2f}x" if not math.isnan(r.deepctr) else "-",
            f"{r.best_any / r.deepctr:.2f}x" if not math.isnan(r.deepctr) else "-",
            f"{r.best_fp32 * tf / (ceil * 1e9):.0%}", f"{r.best_any * tf / (ceil * 1e9):.0%}",
            f"{tf / 1e9:.5f}",
        ])
    print_table(headers, rows)
    log(f"  FLOP fraction = samples/s * 3 * forward FLOPs / fp32 ceiling {ceil:.0f} GFLOP/s. DeepCTR-Torch does "
        "fewer FLOPs per sample (MLP input 429, not 624); its own fraction: "
        + ", ".join(f"{r.kind} {r.deepctr * 3 * r.dc_flops_fwd / (ceil * 1e9):.0%}" for r in results
                    if not math.isnan(r.deepctr)))
    if args.proto:
        log("")
        log("  prototypes of the suggested optimiser changes (benchmark-only code, same models): "
            "dense = Adam(fused=True) everywhere; sparse = row-wise lazy Adam on the tables + fused Adam on the rest")
        prow = []
        for r in results:
            tf = 3 * r.flops_fwd
            prow.append([r.kind, fmt(r.proto_dense.samples_per_s), fmt(r.proto_sparse.samples_per_s),
                         fmt(r.proto_bf16.samples_per_s) + ((" (sparse)" if r.proto_bf16_sparse else " (dense)")
                                                            if not math.isnan(r.proto_bf16.samples_per_s) else ""),
                         f"{r.best_proto / r.deepctr:.2f}x", f"{r.best_proto * tf / (ceil * 1e9):.0%}"])
        print_table(["model", "proto dense", "proto sparse", "proto bf16", "best proto / DeepCTR", "FLOP frac"], prow)
    log("")
    log(f"  per-step phases, ms (batch {BATCH}): forward+loss / zero_grad / backward / optimiser steps")
    prow = []
    for r in results:
        for tag, t in (("dense", r.dense), ("sparse", r.sparse), ("bf16", r.bf16), ("proto dense", r.proto_dense),
                       ("proto sparse", r.proto_sparse), ("proto bf16", r.proto_bf16)):
            if math.isnan(t.samples_per_s):
                continue
            prow.append([r.kind, tag, f"{t.fwd_ms:.1f}", f"{t.zero_ms:.1f}", f"{t.bwd_ms:.1f}", f"{t.opt_ms:.1f}",
                         f"{1e3 * BATCH / t.samples_per_s:.1f}"])
    print_table(["model", "variant", "fwd", "zero", "bwd", "opt", "step"], prow)
    log("")
    log(f"== inference, {vname} vocabulary; {loadavg()}")
    irow = []
    for r in results:
        irow.append([r.kind, fmt(r.infer.get("samples_per_s", float("nan"))),
                     f"{r.infer.get('p50_1_ms', float('nan')):.3f} ms", f"{r.infer.get('p50_256_ms', float('nan')):.3f} ms",
                     fmt(r.infer_bf16.get("samples_per_s", float("nan"))), fmt(r.dc_infer)])
    print_table(["model", "samples/s (batch 4096)", "p50 latency 1 row", "p50 latency 256 rows",
                 "bf16 samples/s", "DeepCTR samples/s"], irow)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=400_000, help="training rows (default 400000)")
    ap.add_argument("--test-rows", type=int, default=50_000, help="held-out rows (AUC check, trainer's valid split)")
    ap.add_argument("--vocab", default="small,realistic", help="small,realistic")
    ap.add_argument("--models", default="dnn,deepfm,dcn")
    ap.add_argument("--steps", type=int, default=16, help="timed steps per run")
    ap.add_argument("--repeat", type=int, default=2, help="runs per measurement; the best is reported")
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--bf16", action="store_true", help="also time bf16 autocast and check its test AUC")
    ap.add_argument("--no-auc", action="store_true", help="with --bf16: skip the fp32-vs-bf16 test AUC check")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--no-trainer", action="store_true", help="skip the full Trainer.fit epoch")
    ap.add_argument("--no-deepctr-fit", action="store_true", help="time DeepCTR-Torch's manual loop only")
    ap.add_argument("--profile", action="store_true", help="torch.profiler top ops of the mtkd variants")
    ap.add_argument("--proto", action="store_true",
                    help="also time prototypes of suggested changes (fused Adam; row-wise lazy Adam for sparse tables)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workdir", default=None, help="where the trainer's dataset goes (default: a temp dir)")
    ap.add_argument("--json", default=None, help="write all numbers here")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        log("--device cuda: no CUDA device here")
        return 2
    kinds = [k.strip() for k in args.models.split(",") if k.strip()]
    vnames = [v.strip() for v in args.vocab.split(",") if v.strip()]
    for k in kinds:
        if k not in MODELS:
            ap.error(f"--models: {k!r} is not one of {MODELS}")
    for v in vnames:
        if v not in VOCABS:
            ap.error(f"--vocab: {v!r} is not one of {tuple(VOCABS)}")

    try:
        dc_mod = import_deepctr()[0]
        dc_version = getattr(dc_mod, "__version__", "?")
    except Exception as exc:  # noqa: BLE001
        log(f"DeepCTR-Torch not importable ({exc}); install it with "
            "`.venv/bin/pip install -c constraints.txt --no-deps deepctr-torch tqdm`")
        return 2
    try:
        import fuxictr  # noqa: F401

        fuxi = f"FuxiCTR {getattr(fuxictr, '__version__', '?')} is installed but this script does not drive it yet"
    except ImportError:
        fuxi = "FuxiCTR not installed: no FuxiCTR column"

    log(f"train_bench: torch {torch.__version__}, DeepCTR-Torch {dc_version}; {fuxi}")
    log(f"  {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}, device {device}; rows {args.rows:,} (+{args.test_rows:,} held out), "
        f"batch {BATCH}, embedding {EMB}, MLP {'-'.join(map(str, HIDDEN))}, Adam 1e-3, "
        f"{args.warmup} warm-up + best of {args.repeat} x {args.steps} timed steps; {loadavg()}")
    ceil = measure_ceiling(device)
    log("  matmul GFLOP/s: " + ", ".join(f"{k} {v:.0f}" for k, v in ceil.items()))
    log(f"  fp32 ceiling used: {ceil['fp32_ceiling']:.0f} GFLOP/s (the highest fp32 rate above)")

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="mtkd_train_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    all_results: dict[str, list[ModelResult]] = {}
    datas: dict[str, Data] = {}
    failures: list[str] = []
    try:
        for vname in vnames:
            t0 = time.perf_counter()
            d = make_data(vname, VOCABS[vname], args.rows, args.test_rows, args.seed)
            datas[vname] = d
            log(f"\n[{vname}] {sum(d.vocab):,} ids in all (per field: {d.vocab}), label rate "
                f"{d.label.mean():.3f}, built in {time.perf_counter() - t0:.1f} s")
            root = None
            if not args.no_trainer:
                root = write_dataset(d, workdir / f"data_{vname}")
            results = []
            for kind in kinds:
                r = ModelResult(kind)
                m, _ = build_mtkd(kind, d, False, torch.device("cpu"))
                r.flops_fwd = forward_flops(m, d.fmap, kind)
                del m
                gc.collect()
                r.dense = time_mtkd(kind, d, False, False, args.steps, args.warmup, args.repeat, device)
                log(f"  {kind}: mtkd dense {fmt(r.dense.samples_per_s)}/s")
                r.sparse = time_mtkd(kind, d, True, False, args.steps, args.warmup, args.repeat, device)
                log(f"  {kind}: mtkd sparse {fmt(r.sparse.samples_per_s)}/s")
                best_sparse = r.sparse.samples_per_s > r.dense.samples_per_s
                if args.bf16:
                    r.bf16_sparse = best_sparse
                    r.bf16 = time_mtkd(kind, d, best_sparse, True, args.steps, args.warmup, args.repeat, device)
                    log(f"  {kind}: mtkd bf16 ({'sparse' if best_sparse else 'dense'}) {fmt(r.bf16.samples_per_s)}/s")
                if args.proto:
                    r.proto_dense = time_mtkd(kind, d, False, False, args.steps, args.warmup, args.repeat, device,
                                              proto=True)
                    r.proto_sparse = time_mtkd(kind, d, True, False, args.steps, args.warmup, args.repeat, device,
                                               proto=True)
                    log(f"  {kind}: proto dense+fused Adam {fmt(r.proto_dense.samples_per_s)}/s, "
                        f"proto sparse+row-wise Adam {fmt(r.proto_sparse.samples_per_s)}/s")
                    if args.bf16:
                        r.proto_bf16_sparse = r.proto_sparse.samples_per_s > r.proto_dense.samples_per_s
                        r.proto_bf16 = time_mtkd(kind, d, r.proto_bf16_sparse, True, args.steps, args.warmup,
                                                 args.repeat, device, proto=True)
                        log(f"  {kind}: proto bf16 {fmt(r.proto_bf16.samples_per_s)}/s")
                r.dc_manual, r.dc_fit, dcm = time_deepctr(kind, d, args.steps, args.warmup, args.repeat, device,
                                                          not args.no_deepctr_fit)
                # DeepCTR's cross kernels are plain Parameters, not nn.Linear: add their 2*in per layer.
                r.dc_flops_fwd = forward_flops(dcm, d.fmap, kind) + (
                    3 * 2.0 * (N_CAT * EMB + N_NUM) if kind == "dcn" else 0.0)
                r.dc_infer = time_deepctr_inference(dcm, d, device)
                del dcm
                gc.collect()
                log(f"  {kind}: DeepCTR manual {fmt(r.dc_manual)}/s, fit {fmt(r.dc_fit)}/s")
                if root is not None:
                    r.trainer_sparse = best_sparse
                    r.trainer = run_trainer(kind, root, best_sparse, device, workdir)
                    log(f"  {kind}: Trainer.fit epoch {fmt(r.trainer)}/s")
                m, _ = build_mtkd(kind, d, False, device)
                r.infer = time_inference(m, d, device)
                if args.bf16:
                    r.infer_bf16 = time_inference(m, d, device, amp=True)
                del m
                gc.collect()
                results.append(r)
            all_results[vname] = results
            report(vname, d, results, ceil["fp32_ceiling"], args)
            if root is not None:
                shutil.rmtree(root, ignore_errors=True)

        if args.bf16 and not args.no_auc:
            log("")
            log(f"== bf16 accuracy check: one epoch ({args.rows:,} rows) fp32 vs bf16 autocast from the same init "
                f"on the same batches, test AUC on {args.test_rows:,} held-out rows; {loadavg()}")
            arow = []
            for vname in vnames:
                for r in all_results[vname]:
                    r.auc = auc_check(r.kind, datas[vname], r.bf16_sparse, device)
                    diff = r.auc[1] - r.auc[0]
                    ok = abs(diff) <= 0.001
                    arow.append([vname, r.kind, "sparse SparseAdam" if r.bf16_sparse else "dense Adam",
                                 f"{r.auc[0]:.5f}", f"{r.auc[1]:.5f}", f"{diff:+.5f}", "ok" if ok else "OVER 0.001"])
                    log(f"  {vname} {r.kind}: AUC fp32 {r.auc[0]:.5f}, bf16 {r.auc[1]:.5f}")
                    if args.proto:
                        r.proto_auc = auc_check(r.kind, datas[vname], r.proto_bf16_sparse, device, proto=True)
                        diff = r.proto_auc[1] - r.proto_auc[0]
                        arow.append([vname, r.kind, "proto " + ("sparse row-wise" if r.proto_bf16_sparse
                                                                else "dense fused"),
                                     f"{r.proto_auc[0]:.5f}", f"{r.proto_auc[1]:.5f}", f"{diff:+.5f}",
                                     "ok" if abs(diff) <= 0.001 else "OVER 0.001"])
            print_table(["vocab", "model", "optimiser", "AUC fp32", "AUC bf16", "bf16 - fp32", "within 0.001"], arow)

        if args.profile:
            for vname in vnames:
                for r in all_results[vname]:
                    variants = [(False, False, False), (True, False, False)] + \
                        ([(r.bf16_sparse, True, False)] if args.bf16 else []) + \
                        ([(r.proto_bf16_sparse, args.bf16, True)] if args.proto else [])
                    for sparse, amp, proto in variants:
                        log(f"\n== profile {vname} {r.kind} {'proto ' if proto else ''}{'sparse' if sparse else 'dense'}"
                            f"{' bf16' if amp else ''} (4 steps, self CPU time); {loadavg()}")
                        log(profile_mtkd(r.kind, datas[vname], sparse, amp, device, proto=proto))
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    # ---------------------------------------------------------------- targets
    log("")
    log(f"== targets; {loadavg()}")
    ceil32 = ceil["fp32_ceiling"]
    for vname, results in all_results.items():
        for r in results:
            if vname == "small" and r.kind == "dnn":
                frac32 = r.best_fp32 * 3 * r.flops_fwd / (ceil32 * 1e9)
                frac = r.best_any * 3 * r.flops_fwd / (ceil32 * 1e9)
                ok = frac >= TARGET_DNN_FRAC
                log(f"  {'PASS' if ok else 'FAIL'} small dnn: {frac:.0%} of the fp32 ceiling "
                    f"(fp32 only {frac32:.0%}; target >= {TARGET_DNN_FRAC:.0%})")
                if not ok:
                    failures.append("small dnn")
            target = TARGET_SMALL_RATIO if vname == "small" else TARGET_REAL_RATIO
            if vname == "small" and r.kind == "dnn":
                continue
            ratio = r.best_any / r.deepctr
            ok = ratio >= target
            log(f"  {'PASS' if ok else 'FAIL'} {vname} {r.kind}: {ratio:.2f}x DeepCTR-Torch "
                f"(fp32 only {r.best_fp32 / r.deepctr:.2f}x; target >= {target}x)")
            if not ok:
                failures.append(f"{vname} {r.kind}")
        if args.proto:
            for r in results:
                if vname == "small" and r.kind == "dnn":
                    frac = r.best_proto * 3 * r.flops_fwd / (ceil32 * 1e9)
                    log(f"  (proto) small dnn: {frac:.0%} of the fp32 ceiling with the prototyped optimisers")
                else:
                    log(f"  (proto) {vname} {r.kind}: {r.best_proto / r.deepctr:.2f}x DeepCTR-Torch with the "
                        "prototyped optimisers")
        if args.bf16:
            for r in results:
                if r.auc and abs(r.auc[1] - r.auc[0]) > 0.001:
                    log(f"  NOTE {vname} {r.kind}: bf16 test AUC differs by {r.auc[1] - r.auc[0]:+.5f} (> 0.001)")

    if args.json:
        out = {"ceiling": ceil, "loadavg": os.getloadavg(), "args": vars(args),
               "results": {v: [{**r.__dict__, "dense": r.dense.__dict__, "sparse": r.sparse.__dict__,
                                "bf16": r.bf16.__dict__, "proto_dense": r.proto_dense.__dict__,
                                "proto_sparse": r.proto_sparse.__dict__, "proto_bf16": r.proto_bf16.__dict__}
                               for r in rs] for v, rs in all_results.items()}}
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
