"""Warm start: initialise a model from another run's best weights (`init_from: RUN_DIR`).

NFM's authors pre-train its embeddings with FM; a student can start from a teacher's embedding
table; a retrain can start where the last one ended. Every tensor whose name and shape match is
copied, the rest keep their fresh initialisation, and the log says which is which. Ids mean
something only within one encoded dataset, so the source run must have been trained on the
same one (same checksum).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from mtkd.errors import MtkdError
from mtkd.train.checkpoint import load_checkpoint


def init_from_run(model: nn.Module, src: str | Path, dataset_checksum: str,
                  log: Callable[[str], None] = print) -> list[str]:
    """Copy matching tensors of `src`'s best.pt into `model`; returns the names copied."""
    src = Path(src)
    cfg_path, best = src / "config.yaml", src / "best.pt"
    if not cfg_path.exists() or not best.exists():
        raise MtkdError(f"init_from {src}: not a finished mtkd run (needs config.yaml and best.pt); "
                        "point it at a run directory written by `mtkd train`")
    from mtkd.train.run import saved_run_config  # run.py builds on this module

    saved = saved_run_config(src)
    if saved.get("dataset_checksum") != dataset_checksum:
        raise MtkdError(f"init_from {src}: it was trained on dataset {saved.get('dataset_checksum')}, this run "
                        f"uses {dataset_checksum}; ids of different encodings do not line up, so warm-start "
                        "from a run on the same prepared dataset")
    source = load_checkpoint(best)["model"]
    target = model.state_dict()
    copied = [k for k, v in source.items() if k in target and target[k].shape == v.shape]
    if not copied:
        raise MtkdError(f"init_from {src}: none of its {len(source)} tensors matches this model's names and "
                        f"shapes (its model: {saved.get('train', {}).get('model')}); use a run with the same "
                        "embedding_dim and feature map")
    with torch.no_grad():
        for k in copied:
            target[k].copy_(source[k])
    kept = set(target) - set(copied)
    log(f"init_from {src}: copied {len(copied)} tensors ({', '.join(copied[:6])}{', ...' if len(copied) > 6 else ''}); "
        f"{len(kept)} keep their initialisation")
    return copied
