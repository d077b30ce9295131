"""Import DeepCTR-Torch offline: the anchor of the benchmarks and of tests/test_transplant.py.

Its `__init__` starts a thread that asks PyPI for a newer version through `requests` (which mtkd
does not install). While it imports, a stand-in answers "no" without a network call or a print.
Install it beside our torch with `pip install --no-deps deepctr-torch==0.3.0 tqdm` (`make setup`
does).
"""

from __future__ import annotations

import sys
import types


def _offline_requests() -> types.ModuleType:
    stub = types.ModuleType("requests")
    stub.codes = types.SimpleNamespace(ok=200)
    stub.get = lambda *a, **k: types.SimpleNamespace(status_code=0, text="{}")
    return stub


def import_deepctr() -> types.ModuleType:
    """The `deepctr_torch` package (models in `.models`, feature columns in `.inputs`)."""
    if "deepctr_torch" not in sys.modules:
        saved = sys.modules.get("requests")
        sys.modules["requests"] = _offline_requests()
        try:
            import deepctr_torch  # noqa: F401
            import deepctr_torch.inputs  # noqa: F401
            import deepctr_torch.models  # noqa: F401
        finally:
            if saved is None:
                sys.modules.pop("requests", None)
            else:
                sys.modules["requests"] = saved
    return sys.modules["deepctr_torch"]
