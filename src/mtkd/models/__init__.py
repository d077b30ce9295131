"""The CTR model zoo: importing this package registers every model by name."""

from mtkd.models import (  # noqa: F401  (imported to register)
    autoint,
    dcn,
    dcnv2,
    deepfm,
    dnn,
    fibinet,
    fm,
    ipnn,
    lr,
    nfm,
    wide_deep,
    xdeepfm,
)
from mtkd.models.base import CTRModel, ModelOutput
from mtkd.models.registry import MODELS, build_model, model_params, register_model

__all__ = ["CTRModel", "MODELS", "ModelOutput", "build_model", "model_params", "register_model"]
