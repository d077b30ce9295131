"""What the scoring service has done, for `GET /metrics` (Prometheus text format, version 0.0.4).

Counters of requests by status and of rows scored, the model calls the batcher made (rows per
call shows how much merging happened), and a histogram of request latency, so a deployment can
watch the student the way it watches any service. Thread-safe: request threads update it.
"""

from __future__ import annotations

import bisect
import threading

BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)  # seconds


class ServiceMetrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_status: dict[int, int] = {}
        self.rows = 0
        self.counts = [0] * (len(BUCKETS) + 1)  # the last one: above every bound
        self.seconds = 0.0

    def observe(self, status: int, rows: int, seconds: float) -> None:
        """One answered POST /predict: its HTTP status, rows scored (0 unless 200), wall time."""
        with self._lock:
            self.by_status[status] = self.by_status.get(status, 0) + 1
            self.rows += rows
            self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
            self.seconds += seconds

    def render(self, model_calls: int, engine: str) -> str:
        with self._lock:
            lines = ["# HELP mtkd_requests_total POST /predict requests answered, by HTTP status.",
                     "# TYPE mtkd_requests_total counter"]
            lines += [f'mtkd_requests_total{{code="{c}"}} {n}' for c, n in sorted(self.by_status.items())]
            lines += ["# HELP mtkd_rows_total Rows scored.", "# TYPE mtkd_rows_total counter",
                      f"mtkd_rows_total {self.rows}",
                      "# HELP mtkd_model_calls_total Model calls; concurrent requests share one.",
                      "# TYPE mtkd_model_calls_total counter", f'mtkd_model_calls_total{{engine="{engine}"}} {model_calls}',
                      "# HELP mtkd_request_seconds Wall time of POST /predict, read to written.",
                      "# TYPE mtkd_request_seconds histogram"]
            total = 0
            for bound, n in zip(BUCKETS, self.counts):
                total += n
                lines.append(f'mtkd_request_seconds_bucket{{le="{bound:g}"}} {total}')
            total += self.counts[-1]
            lines += [f'mtkd_request_seconds_bucket{{le="+Inf"}} {total}',
                      f"mtkd_request_seconds_sum {self.seconds:.6f}", f"mtkd_request_seconds_count {total}"]
        return "\n".join(lines) + "\n"
