"""The one training loop. Teachers, students, co-training and teacher selection all run here;
what differs is the objective (see `train.objectives`).

It evaluates every epoch (or every N steps), stops early on any logged validation quantity,
lowers the learning rate on plateaus, restores the best weights at the end, and writes
`last.pt` after each epoch so that `--resume` continues from the last finished epoch and
ends exactly where an uninterrupted run would (same data order, same RNG state).
"""

from __future__ import annotations

import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from mtkd.config import TrainConfig
from mtkd.data.batch import Batch
from mtkd.data.loader import BatchLoader, keep_on_device
from mtkd.data.store import Dataset
from mtkd.dist import all_gather_rows, barrier, check_in_sync, mark_sparse_tables, sync_gradients
from mtkd import jsonout
from mtkd.errors import MtkdError
from mtkd.models.base import CTRModel
from mtkd.train.checkpoint import load_checkpoint, save_checkpoint
from mtkd.train.device import cuda_rng_state, native_bf16, resolve_device, set_cuda_rng_state, synchronize
from mtkd.train.metrics import check_monitor, compute_metrics, metric_mode, worse_than_prior
from mtkd.train.objectives import Objective
from mtkd.train.optimizers import EmbeddingL2, build_optimizers  # noqa: F401  (re-exported)
from mtkd.train.progress import Progress
from mtkd.train.rows import Rows
from mtkd.train.running import RunningMeans
from mtkd.data.atomic import atomic_write_text


DIVERGED = ("lower the learning rate, scale huge numeric columns (add `log` to their transforms) or check the "
            "teachers' outputs; then start the run over (`--force`: it saved no best weights)")


@dataclass
class TrainState:
    """Everything the loop needs to continue after a restart (saved in last.pt)."""

    epoch: int = 0  # next epoch to run
    step: int = 0
    best: float | None = None
    best_epoch: int = -1
    best_step: int = 0
    bad_evals: int = 0
    lr_bad_evals: int = 0
    logged: int = 0  # lines of metrics.jsonl that belong to finished work
    train_seconds: float = 0.0
    samples: int = 0
    done: bool = False
    stopped_early: bool = False


def configure_torch() -> None:
    """Flush denormal floats to zero. Embeddings start at std 1e-4, so the first layers
    produce denormals, which run ~10x slower on x86 CPUs (measured: 5.6 s vs 0.6 s for 30
    DNN steps on Frappe)."""
    torch.set_flush_denormal(True)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


class Trainer:
    """Trains `model` on `dataset` with `objective`, writing into `run_dir`."""

    def __init__(self, cfg: TrainConfig, dataset: Dataset, model: CTRModel, objective: Objective,
                 run_dir: str | Path, device: torch.device | None = None,
                 log: Callable[[str], None] = print, progress: bool = True, rank: int = 0, world_size: int = 1):
        configure_torch()
        self.cfg = cfg
        self.dataset = dataset
        self.task = dataset.feature_map.task
        self.device = device or resolve_device(cfg.device)
        native = native_bf16(self.device)
        self.bf16 = cfg.amp == "bf16" or (cfg.amp == "auto" and native)  # decided once
        self.model = model.to(self.device)
        self.objective = objective
        for m in objective.modules():
            m.to(self.device)
        self.run_dir = Path(run_dir)
        self.log = log if rank == 0 else (lambda s: None)
        if cfg.amp == "bf16" and not native:
            self.log(f"warning: amp: bf16 on a {self.device.type} without native bf16 (no avx512_bf16 / amx_bf16): "
                     "autocast emulates it, ~50x slower matmuls than fp32 (measured 3 vs 180 GFLOP/s on an "
                     "AVX2 EPYC); set amp: auto to use bf16 only where it is native")
        self.rank, self.world_size = rank, world_size
        self.optimizers = build_optimizers(self.model, objective.modules(), cfg)
        self.embedding_l2 = EmbeddingL2([self.model, *objective.modules()])
        self.monitor = cfg.monitor if cfg.monitor != "auto" else (
            "valid.auc" if self.task == "binary" else "valid.accuracy")
        self.mode = metric_mode(self.monitor)
        check_monitor(self.monitor, self.task, dataset, objective.eval_names())  # else found after an epoch
        self.state, self.eval_seconds = TrainState(), 0.0
        self.progress = Progress(progress and rank == 0)
        self.train_loader = BatchLoader(dataset, "train", cfg.batch_size, shuffle=True, seed=cfg.seed,
                                        rank=rank, world_size=world_size, **objective.loader_extra("train"))
        if keep_on_device(cfg.data_on_device, self.device, self.train_loader):
            self.train_loader.place_on(self.device)
        # under torchrun: every trained parameter (model and objective) is averaged after backward
        self.synced = [p for o in self.optimizers for g in o.param_groups for p in g["params"]]
        if world_size > 1:
            mark_sparse_tables([self.model, *objective.modules()])
        objective.bind(self)

    # ------------------------------------------------------------------ checkpoints
    def _ckpt(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "objective": self.objective.state_dict(),
            "optimizers": [o.state_dict() for o in self.optimizers],
            "state": asdict(self.state),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": cuda_rng_state(self.device),
        }

    def _save_last(self) -> None:
        if self.rank == 0:
            save_checkpoint(self.run_dir / "last.pt", self._ckpt())

    def _save_best(self) -> None:
        if self.rank == 0:
            save_checkpoint(self.run_dir / "best.pt", {"model": self.model.state_dict(),
                                                       "objective": self.objective.state_dict()})

    def resume(self) -> bool:
        """Load last.pt if there is one; returns whether training continues from it."""
        path = self.run_dir / "last.pt"
        if not path.exists():
            return False
        ck = load_checkpoint(path, self.device)
        try:
            self.model.load_state_dict(ck["model"])
            self.objective.load_state_dict(ck["objective"])
            if len(ck["optimizers"]) != len(self.optimizers):
                raise ValueError(f"{len(ck['optimizers'])} optimisers saved, {len(self.optimizers)} now")
            for o, s in zip(self.optimizers, ck["optimizers"]):
                o.load_state_dict(s)
        except (RuntimeError, ValueError, KeyError) as e:
            raise MtkdError(
                f"{path}: cannot resume from it, it does not match this run's model or optimisers "
                f"(written by another version or configuration?): {e}. Start the run afresh "
                f"(`--force`, or delete {self.run_dir})") from e
        self.state = TrainState(**ck["state"])
        torch.set_rng_state(ck["torch_rng"].cpu())
        set_cuda_rng_state(ck.get("cuda_rng"), self.device)
        self._truncate_metrics(self.state.logged)
        st = self.state
        self.log(f"resumed from {path}: training had finished (step {st.step}); finishing the run"
                 if st.done or st.epoch >= self.cfg.epochs else
                 f"resumed from {path} at epoch {st.epoch + 1} (step {st.step})")
        return True

    def _truncate_metrics(self, lines: int) -> None:
        p = self.run_dir / "metrics.jsonl"
        if p.exists() and self.rank == 0:
            kept = p.read_text().splitlines()[:lines]
            atomic_write_text(p, "".join(line + "\n" for line in kept))

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def predict(self, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(logits, labels, row index, groups) of a whole split, in row order, on the CPU. Under
        torchrun each rank scores its own block of rows and the blocks are gathered, so every
        rank ends with the whole split's outputs (and the same metrics) at 1/world of the work."""
        if (rows := self.dataset.split(split).rows) < self.world_size:
            raise MtkdError(f"split {split!r} has {rows} row(s), fewer than the {self.world_size} ranks sharing it")
        loader = BatchLoader(self.dataset, split, self.cfg.eval_batch_size, shuffle=False, rank=self.rank,
                             world_size=self.world_size, pad_shards=False, **self.objective.loader_extra(split))
        self.model.eval()
        self.objective.train(False)
        rows = Rows(len(loader.shard_indices()))  # buffers sized once (see train.rows)
        for batch in loader:
            b = batch.to(self.device, non_blocking=True)
            # fp32 even under amp: bf16 keeps 8 bits of a logit, so logits 0.008 apart tie and the AUC
            # that picks the best epoch is that of rounded scores (measured: 0.50 against 0.73 in
            # fp32 for one model); serving (ONNX, TorchScript) is fp32 too
            out = self.model(b)
            self.objective.eval_batch(split, self.model, b, out)
            rows.add(out.logits.float().cpu(), batch.label, batch.index, batch.group)
        self.model.train()
        self.objective.train(True)
        parts = rows.tensors()
        if self.world_size > 1:  # contiguous blocks in rank order: concatenated they are in row order
            got = iter(all_gather_rows(*(t for t in parts if t is not None)))
            parts = [None if t is None else next(got) for t in parts]
        return parts[0], parts[1], parts[2], parts[3]

    def evaluate(self, split: str) -> dict[str, float]:
        logits, labels, index, groups = self.predict(split)
        metrics = compute_metrics(self.task, labels.numpy(), logits.numpy(),
                                  None if groups is None else groups.numpy())
        metrics.update(self.objective.eval_result(split))
        return {k: float(v) for k, v in metrics.items()}

    def _autocast(self):
        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    # ------------------------------------------------------------------ the loop
    def fit(self, resume: bool = False) -> dict[str, Any]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not (resume and self.resume()):
            self._truncate_metrics(0)
        cfg, st = self.cfg, self.state
        n_batches = len(self.train_loader)
        try:
            while not st.done and st.epoch < cfg.epochs:
                self._run_epoch(n_batches)
        except KeyboardInterrupt:
            self.progress.close()
            self.log(f"interrupted; {self.run_dir / 'last.pt'} holds the last finished epoch — "
                     "run again with --resume to continue")
            raise
        self.progress.close()
        return self._finish()

    def _run_epoch(self, n_batches: int) -> None:
        cfg, st = self.cfg, self.state
        self.train_loader.set_epoch(st.epoch)
        self.model.train()
        self.objective.train(True)
        self.objective.on_epoch_start(st.epoch)
        t0, evals_before = time.perf_counter(), self.eval_seconds
        running = RunningMeans(self.device)
        stop = False
        for i, batch in enumerate(self.train_loader):
            loss, logs = self._step(batch.to(self.device, non_blocking=True))
            st.step += 1
            running.add(loss, logs, len(batch))
            if i % 100 == 0 and not math.isfinite(value := float(loss.detach())):
                raise MtkdError(f"training loss is {value} at step {st.step}; {DIVERGED}")
            if self.progress.due(i + 1 == n_batches):
                synchronize(self.device)
                busy = time.perf_counter() - t0 - (self.eval_seconds - evals_before)
                self.progress.update(st.epoch, cfg.epochs, i + 1, n_batches, running.seen / max(busy, 1e-9),
                                     running.local_loss())
            if cfg.eval_every and st.step % cfg.eval_every == 0:
                if self._evaluate_and_track(running.means(), t0 + 0.0):
                    stop = True
                    break
        synchronize(self.device)
        elapsed = time.perf_counter() - t0 - (self.eval_seconds - evals_before)  # training only
        st.train_seconds += elapsed
        st.samples += running.seen
        train_logs = running.means({"samples_per_s": running.seen / max(elapsed, 1e-9)})
        # with eval_every, the last epoch's steps after the last evaluation are evaluated too
        tail = cfg.eval_every and not stop and st.epoch + 1 >= cfg.epochs and st.step % cfg.eval_every
        if not cfg.eval_every or tail:
            stop = self._evaluate_and_track(train_logs, elapsed)
        st.epoch += 1
        if stop or st.epoch >= cfg.epochs:
            st.done = True
        self._save_last()

    def _step(self, b: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One optimisation step on a device batch: forward, backward, gradients averaged over
        ranks (torchrun), embedding L2, clipping, every optimiser, then the objective's hook."""
        with self._autocast():
            out = self.model(b)
            loss, logs = self.objective.loss(self.model, b, out)
        for o in self.optimizers:
            o.zero_grad(set_to_none=True)
        loss.backward()
        sync_gradients(self.synced)  # under torchrun: the mean over every rank's batch
        if self.embedding_l2:
            self.embedding_l2.apply()
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_([p for g in self.optimizers for pg in g.param_groups
                                            for p in pg["params"] if p.grad is not None and not p.grad.is_sparse],
                                           self.cfg.grad_clip)
        for o in self.optimizers:
            o.step()
        more = self.objective.after_step(self.model, b, out, self.state.step)
        return loss, ({**logs, **more} if more else logs)

    def _evaluate_and_track(self, train_logs: dict[str, float], elapsed: float) -> bool:
        """Evaluate on valid, log a metrics line, track the best, adjust LR; True = stop now."""
        cfg, st = self.cfg, self.state
        t = time.perf_counter()
        valid = self.evaluate("valid") if "valid" in self.dataset.split_names else {}
        record: dict[str, Any] = {"epoch": st.epoch + 1, "step": st.step, **train_logs}
        record.update({f"valid.{k}": v for k, v in valid.items()})
        record["lr"] = self.optimizers[0].param_groups[0]["lr"] if self.optimizers else None
        self.eval_seconds += time.perf_counter() - t
        record["eval_seconds"] = round(time.perf_counter() - t, 3)
        if self.monitor not in record:
            raise MtkdError(f"monitor {self.monitor!r} is not logged; logged: {sorted(k for k in record if '.' in k)}")
        value = float(record[self.monitor])
        if not math.isfinite(train_logs["train.loss"]):  # a NaN run must not save its weights as "best"
            raise MtkdError(f"training loss is {train_logs['train.loss']} by step {st.step}; {DIVERGED}")
        if not math.isfinite(value):
            raise MtkdError(f"monitor {self.monitor} is {value} at step {st.step} (a validation split with one class "
                            "has no AUC); monitor another quantity, e.g. --set monitor=valid.logloss")
        improved = st.best is None or (value > st.best + cfg.min_delta if self.mode == "max"
                                       else value < st.best - cfg.min_delta)
        if improved:
            st.best, st.best_epoch, st.best_step, st.bad_evals, st.lr_bad_evals = value, st.epoch + 1, st.step, 0, 0
            self._save_best()
        else:
            st.bad_evals += 1
            st.lr_bad_evals += 1
            if cfg.lr_patience and st.lr_bad_evals >= cfg.lr_patience:
                self._reduce_lr()
                st.lr_bad_evals = 0
        record["best"] = st.best
        self._append_metrics(record)
        shown = " ".join(f"{k}={v:.5f}" for k, v in record.items()
                         if k.startswith("valid.") and isinstance(v, float))
        self.progress.close()
        self.log(f"epoch {st.epoch + 1} step {st.step}: train.loss={train_logs['train.loss']:.5f} {shown}"
                 f"{'  *' if improved else ''}")
        if st.bad_evals >= cfg.patience:
            st.stopped_early = True
            self.log(f"early stop: {self.monitor} did not improve for {cfg.patience} evaluation(s); "
                     f"best {st.best:.5f} at epoch {st.best_epoch}")
            return True
        return False

    def _reduce_lr(self) -> None:
        for o in self.optimizers:
            for g in o.param_groups:
                g["lr"] = max(g["lr"] * self.cfg.lr_factor, min(self.cfg.min_lr, g["lr"]))  # never up

    def _append_metrics(self, record: dict[str, Any]) -> None:
        if self.rank != 0:
            return
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(jsonout.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.state.logged += 1

    def _finish(self) -> dict[str, Any]:
        if self.world_size > 1:
            # every weight of the model and the objective (the policy's included, which trains itself)
            check_in_sync([q for m in (self.model, *self.objective.modules()) for q in m.parameters()],
                          self.world_size)
            barrier(self.world_size)  # rank 0 has written best.pt
        best = self.run_dir / "best.pt"
        if best.exists():
            ck = load_checkpoint(best, self.device)
            self.model.load_state_dict(ck["model"])
            self.objective.load_state_dict(ck["objective"])
        st = self.state
        summary: dict[str, Any] = {
            "model": self.cfg.model,
            "monitor": self.monitor,
            "best": st.best,
            "best_epoch": st.best_epoch,
            "best_step": st.best_step,  # with eval_every, which evaluation of that epoch
            "epochs_run": st.epoch,
            "steps": st.step,
            "stopped_early": st.stopped_early,
            "params": sum(p.numel() for p in self.model.parameters()),
            "train_seconds": round(st.train_seconds, 3),
            # all ranks together (every rank trains on an equal shard)
            "train_samples_per_s": round(st.samples * self.world_size / max(st.train_seconds, 1e-9), 1),
            "world_size": self.world_size,
            "device": str(self.device),
            "dataset": str(Path(self.dataset.root).resolve()),
            "dataset_checksum": self.dataset.checksum,
        }
        for split in ("valid", "test"):
            if split in self.dataset.split_names:
                summary[split] = self.evaluate(split)
        if self.rank == 0 and (warning := worse_than_prior(self.dataset, self.task, summary.get("valid", {}))):
            self.log(warning)
        if self.rank == 0:
            atomic_write_text(self.run_dir / "summary.json", jsonout.dumps(summary, indent=1))
        return summary
