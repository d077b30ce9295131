"""A teacher's hidden vectors as the teacher-selection policy reads them: a K-float code.

The policy's state includes each teacher's hidden vector, layer-normalised, projected onto its
top K principal directions and whitened (`hidden_proj`, 16 by default). Cached whole, a hidden
layer is 400-800 floats per row: on the 45M rows of Criteo that is 70-140 GB of disk per
teacher, and the policy only ever reads its 16-float code. So the code is fitted on a fixed
sample of training rows (the teacher run once over them) when the teacher is scored, and only
the code of each row is cached: 2.9 GB per teacher there. Raw vectors are still cached for
hint regression, which needs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SAMPLE_ROWS = 50_000  # training rows the principal directions are estimated from


def sample_rows(n: int, max_rows: int = SAMPLE_ROWS, seed: int = 0) -> np.ndarray:
    """A fixed, sorted sample of row numbers: the same for every seed of a run, so the code of
    a teacher (and the cached policy state) is computed once per teacher, not once per run."""
    return np.sort(np.random.default_rng(seed).choice(n, min(max_rows, n), replace=False))


@dataclass
class HiddenCode:
    """x -> (layer_norm(x) - mean) @ w, with w the top-k eigenvectors of the sample covariance
    scaled to unit variance (whitened PCA)."""

    mean: torch.Tensor  # [H]
    w: torch.Tensor  # [H, k]

    @classmethod
    def fit(cls, hidden: np.ndarray, k: int) -> "HiddenCode":
        x = F.layer_norm(torch.as_tensor(np.asarray(hidden, dtype=np.float32)), hidden.shape[1:])
        mean = x.mean(0)
        xc = (x - mean).double()
        evals, evecs = torch.linalg.eigh(xc.T @ xc / max(xc.shape[0] - 1, 1))
        top = torch.argsort(evals, descending=True)[: min(k, x.shape[1])]
        w = evecs[:, top] / evals[top].clamp_min(1e-6).sqrt()
        return cls(mean, w.float())

    @property
    def width(self) -> int:
        return int(self.w.shape[1])

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(hidden.float(), hidden.shape[-1:])
        return (x - self.mean.to(x.device)) @ self.w.to(x.device)

    def save(self, path: Path) -> None:
        with open(path, "wb") as f:
            np.savez(f, mean=self.mean.numpy(), w=self.w.numpy())

    @classmethod
    def load(cls, path: Path) -> "HiddenCode":
        with np.load(path) as z:
            return cls(torch.from_numpy(z["mean"]), torch.from_numpy(z["w"]))


@torch.no_grad()
def fit_code(model: torch.nn.Module, dataset: object, k: int, device: torch.device | str = "cpu",
             batch_size: int = 8192) -> HiddenCode:
    """The code of `model`'s hidden vectors, fitted on `sample_rows` of the training split."""
    from mtkd.data.loader import BatchLoader

    loader = BatchLoader(dataset, "train", batch_size, shuffle=False)
    rows = sample_rows(loader.split.rows)
    model.eval()
    parts = [model(loader.gather(rows[i : i + batch_size]).to(device)).hidden.float().cpu()
             for i in range(0, len(rows), batch_size)]
    return HiddenCode.fit(torch.cat(parts).numpy(), k)
