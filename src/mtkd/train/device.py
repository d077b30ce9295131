"""Where a run computes: the `--device` choice, native bf16, and what a GPU needs that a CPU
does not (a clock read after the queued kernels finish, one generator per device).

The CPU is the tested default; each CUDA difference lives here so the loop reads the same on both.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from mtkd.errors import MtkdError


DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")  # what `--device` and a config's `device` take


def resolve_device(name: str) -> torch.device:
    """`auto`, `cpu`, `cuda` or `cuda:N`. Under torchrun a CUDA run takes its rank's GPU
    (`LOCAL_RANK`, as the process group does): an explicit other index put every rank on one GPU."""
    if not DEVICE_NAME.fullmatch(name):
        raise MtkdError(f"--device {name}: expected auto, cpu, cuda or cuda:N")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MtkdError(f"--device {name}: no CUDA device is available here; use --device cpu or auto")
    device = torch.device(name)
    if device.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device.index is not None and device.index != local:
            raise MtkdError(f"--device {name} under torchrun: each rank trains on its own GPU "
                            f"(this rank's LOCAL_RANK is {local}); pass --device cuda")
        return torch.device("cuda", local)
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls run natively here (else autocast to bf16 emulates and is slower)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work: a GPU clock read without it times the launches, not the
    steps (samples/s then counts kernels still running). A no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cuda_rng_state(device: torch.device) -> torch.Tensor | None:
    """The generator of the GPU this run trains on. Not `get_rng_state_all`: rank 0 writes the
    checkpoint, and its copy of rank k's GPU generator is one rank 0 never drew from."""
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def set_cuda_rng_state(state: Any, device: torch.device) -> None:
    """Restore `cuda_rng_state` (or a list of every GPU's, from older checkpoints)."""
    if state is None or device.type != "cuda":
        return
    if isinstance(state, (list, tuple)):
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= len(state):
            return
        state = state[index]
    torch.cuda.set_rng_state(state.cpu(), device)


def current_cuda_devices() -> list[int]:
    """The GPU this process uses, for `torch.random.fork_rng`: forking every visible GPU makes a
    CUDA context on each (hundreds of MB a rank) for generators the run never draws from."""
    return [torch.cuda.current_device()] if torch.cuda.is_available() else []
