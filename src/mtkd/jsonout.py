"""JSON that other programs read (metrics.jsonl, summary.json, results.json, `--json`).

Python writes a NaN metric (the AUC of a split with one class) as a bare `NaN`, which is not JSON:
strict parsers, jq and JavaScript's JSON.parse reject the whole file. Non-finite numbers are
written as null instead, and a stray one is an error here rather than invalid output.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite(obj: Any) -> Any:
    """`obj` with every NaN / inf float (nested in dicts, lists and tuples) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def dumps(obj: Any, **kw: Any) -> str:
    return json.dumps(finite(obj), allow_nan=False, **kw)
