"""mtkd: multi-teacher knowledge distillation for CTR prediction and classification."""

__version__ = "0.1.0"
