"""Dynamic batching for the HTTP service: one scoring thread, concurrent requests merged.

Each request thread of the server would otherwise call the model itself: several threads then
fight over the cores (every ONNX Runtime or PyTorch call spreads over all of them) and a model
call's fixed cost is paid per request. Here requests queue; the scoring thread takes every
request waiting when it is free (up to `max_rows` rows), encodes and scores them as one batch,
and hands each its slice. Nothing waits on purpose: an idle service scores a lone request at
once, so batching only happens when requests would have queued anyway.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

import numpy as np
import pyarrow as pa

from mtkd.errors import MtkdError
from mtkd.serve.scorer import Scorer


class Stopped(RuntimeError):
    """The service is stopping: a request that arrives after the batcher closed (HTTP 503)."""


class Batcher:
    def __init__(self, scorer: Scorer, max_rows: int = 8192):
        if max_rows < 1:
            raise MtkdError(f"max_rows must be >= 1, got {max_rows}")
        self.scorer = scorer
        self.max_rows = max_rows
        self.calls = 0  # model calls so far (requests / calls = how much batching happened)
        self._queue: queue.Queue[tuple[pa.RecordBatch, Future] | None] = queue.Queue()
        self._lock = threading.Lock()  # no request is queued behind the stop (it would wait forever)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="mtkd-scorer", daemon=True)
        self._thread.start()

    def score(self, batch: pa.RecordBatch) -> np.ndarray:
        """Probabilities of `batch`'s rows (blocks until its turn comes)."""
        done: Future = Future()
        with self._lock:
            if self._closed:
                raise Stopped("the service is stopping; send the request again to a running one")
            self._queue.put((batch, done))
        return done.result()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._queue.put(None)
        self._thread.join(timeout=10)

    def _take(self) -> list[tuple[pa.RecordBatch, Future]] | None:
        first = self._queue.get()
        if first is None:
            return None
        items, rows = [first], first[0].num_rows
        while rows < self.max_rows:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:  # close after this round
                self._queue.put(None)
                break
            items.append(item)
            rows += item[0].num_rows
        return items

    def _run(self) -> None:
        while (items := self._take()) is not None:
            try:
                merged = items[0][0] if len(items) == 1 else \
                    pa.Table.from_batches([b for b, _ in items]).combine_chunks().to_batches()[0]
                self.calls += 1
                probs = self.scorer.score_batch(merged)
            except Exception as e:  # noqa: BLE001 - one bad request must not fail the others merged with it
                if len(items) == 1:
                    items[0][1].set_exception(e)
                else:
                    for b, done in items:
                        self._one(b, done)
                continue
            start = 0
            for b, done in items:
                done.set_result(probs[start:start + b.num_rows])
                start += b.num_rows

    def _one(self, batch: pa.RecordBatch, done: Future) -> None:
        try:
            self.calls += 1
            done.set_result(self.scorer.score_batch(batch))
        except Exception as e:  # noqa: BLE001 - handed to the request's thread
            done.set_exception(e)
