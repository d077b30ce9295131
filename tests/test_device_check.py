"""The GPU check (`benchmarks/device_check.py`) runs only when a GPU is lent, so it is dry-run here
on the CPU: every model of the zoo must find data it builds on and pass, or the check would
break on the day it matters (it did: DIN, added later, stopped it at its first model)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mtkd.models import MODELS

REPO = Path(__file__).resolve().parents[1]


def test_device_check_dry_run_covers_every_model() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "device_check.py"), "--device", "cpu",
                           "--rows", "2000", "--bar-rows", "0"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip()
            for line in proc.stdout.splitlines() if line.startswith("| ") and "---" not in line}
    assert set(MODELS) <= set(rows), sorted(set(MODELS) - set(rows))
    assert rows["din"] == "history" and rows["text_cnn"] == "text" and rows["dnn"] == "ctr"
    assert "FAIL" not in proc.stdout
