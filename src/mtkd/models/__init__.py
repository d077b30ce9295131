"""The CTR model zoo: importing this package registers every model by name.

It also flushes denormal floats to zero: embeddings start near 1e-4, their products are
denormal, and x86 CPUs run those ~10x slower. It must happen before torch starts its thread
pool, hence here, at import, rather than inside a training call.
"""

import torch as _torch

_torch.set_flush_denormal(True)

from mtkd.models import (  # noqa: F401  (imported to register)
    autoint,
    dcn,
    dcnv2,
    deepfm,
    din,
    dnn,
    fibinet,
    fm,
    ipnn,
    lr,
    nfm,
    text,
    wide_deep,
    xdeepfm,
)
from mtkd.models.base import CTRModel, ModelOutput
from mtkd.models.registry import MODELS, build_model, check_params, model_params, register_model

__all__ = ["CTRModel", "MODELS", "ModelOutput", "build_model", "check_params", "model_params", "register_model"]
