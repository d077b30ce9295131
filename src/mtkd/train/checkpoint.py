"""Checkpoints written atomically (temporary file, fsync, rename): a kill leaves the old one."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import torch

from mtkd.data.atomic import atomic_write_bytes
from mtkd.errors import MtkdError


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (SHA-NI: about twice blake2b here). What a checkpoint is: a
    teacher's cache and a run's export are keyed by it, so a model retrained in place (same path)
    is told apart; and what a cached teacher output was when written."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise MtkdError(f"{p}: checkpoint not found")
    try:
        return torch.load(p, map_location=map_location, weights_only=False)
    except Exception as exc:  # a truncated or foreign file
        raise MtkdError(f"{p}: cannot load checkpoint ({exc}); retrain or restore the file") from None
