"""A one-line training progress bar with samples/s."""

from __future__ import annotations

import sys
import time


class Progress:
    """A one-line progress bar with samples/s on a terminal; silent otherwise."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stderr.isatty()
        self.last = 0.0
        self.on_line = False  # the bar holds the terminal's current line

    def due(self, last: bool) -> bool:
        return self.enabled and (last or time.monotonic() - self.last >= 0.5)

    def update(self, epoch: int, epochs: int, done: int, total: int, samples_per_s: float, loss: float) -> None:
        self.last = time.monotonic()
        width = 24
        fill = int(width * done / max(total, 1))
        sys.stderr.write(f"\repoch {epoch + 1}/{epochs} [{'#' * fill}{'.' * (width - fill)}] "
                         f"{done}/{total} {samples_per_s:,.0f} samples/s loss {loss:.4f}  ")
        sys.stderr.flush()
        self.on_line = True

    def close(self) -> None:
        """End the bar's line, so what is logged next starts on its own (not glued to the bar)."""
        if self.enabled and self.on_line:
            sys.stderr.write("\n")
            self.on_line = False
