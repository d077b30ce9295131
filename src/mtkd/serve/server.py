"""`mtkd serve`: an HTTP scoring service for a run or an export (standard library server).

    POST /predict   {"rows": [{"C1": "68fd1e64", "I1": 3, ...}, ...]}
                    -> {"probabilities": [0.12, ...]}                       (binary)
                    -> {"classes": [...], "probabilities": [[...], ...]}    (multi-class)
    GET  /health    -> {"status": "ok", "engine": "onnx" | "torch", "model": PATH, "columns": [...]}
    GET  /metrics   -> Prometheus text: requests by status, rows, model calls, latency histogram

A request's rows are encoded and scored as one batch, together with the other requests waiting
at that moment (`serve.batcher`); a missing column is a missing value, an
unknown column or a value of the wrong type is a 400 with the row and column named. Requests are
served on threads (ONNX Runtime and PyTorch inference both release the GIL in their kernels).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from mtkd.errors import MtkdError
from mtkd.serve.batcher import Batcher, Stopped
from mtkd.serve.metrics import ServiceMetrics
from mtkd.serve.scorer import Scorer

MAX_BODY = 64 << 20


class ScoringServer(ThreadingHTTPServer):
    """The HTTP server with what its request threads share: the scorer, the batcher that runs
    the model, and the counters of GET /metrics. Closing it stops the batcher too."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], scorer: Scorer, max_batch_rows: int = 8192,
                 reuse_port: bool = False):
        self.allow_reuse_port = reuse_port  # several worker processes on one port (`--workers`)
        self.scorer = scorer
        self.batcher = Batcher(scorer, max_batch_rows)
        self.metrics = ServiceMetrics()
        self._busy = 0  # POSTs being answered (a stop waits for them: `drain`)
        self._idle = threading.Condition()
        super().__init__(address, PredictHandler)

    def answering(self, delta: int) -> None:
        with self._idle:
            self._busy += delta
            self._idle.notify_all()

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until no POST is being answered (True), or `timeout` seconds (False)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)

    def server_close(self) -> None:
        """Stop listening, let the requests in flight get their answers, then stop the batcher
        (request threads are daemons: without the wait a stop dropped their connections)."""
        super().server_close()
        if not self.drain():
            print(f"warning: {self._busy} request(s) still unanswered after 30 s; stopping", file=sys.stderr)
        self.batcher.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up before its answer is written is no server error: no traceback."""
        if isinstance(sys.exc_info()[1], ConnectionError):  # BrokenPipe, ConnectionReset
            return
        super().handle_error(request, client_address)

    def run(self, ready: Callable[[], None] | None = None) -> None:
        """Serve until Ctrl-C or SIGTERM (a process manager's stop, or the `--workers` parent),
        then close: in-flight answers are finished, the port is released. `ready` (the "serving
        on" line) runs once the stop is in place, so a SIGTERM just after it stops cleanly too."""
        stop_on_sigterm()
        try:
            if ready is not None:
                ready()
            self.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self.server_close()


def make_server(scorer: Scorer, host: str = "127.0.0.1", port: int = 8080, max_batch_rows: int = 8192,
                reuse_port: bool = False) -> ScoringServer:
    """A server bound to (host, port); port 0 picks a free one (`server.server_address[1]`).
    Concurrent requests are scored together, up to `max_batch_rows` rows per model call."""
    try:
        return ScoringServer((host, port), scorer, max_batch_rows, reuse_port)
    except OSError as e:
        raise _cannot_listen(host, port, e) from None


def _cannot_listen(host: str, port: int, e: OSError) -> MtkdError:
    import errno
    import socket

    if isinstance(e, socket.gaierror):  # the name did not resolve: no port would help
        return MtkdError(f"cannot listen on {host}:{port}: {e.strerror}; --host takes an address of this machine "
                         "(127.0.0.1, 0.0.0.0, ::) or a name that resolves to one")
    if e.errno == errno.EADDRNOTAVAIL:
        return MtkdError(f"cannot listen on {host}:{port}: {e.strerror}; {host} is not an address of this machine "
                         "(choose another --host, e.g. 127.0.0.1 or 0.0.0.0)")
    return MtkdError(f"cannot listen on {host}:{port}: {e.strerror} (another server there? choose another --port)")


def check_port_free(host: str, port: int) -> None:
    """`--workers` binds with SO_REUSEPORT, which a second service on the same port would share
    silently (requests scored by either model at random): probe it once without, first."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server: TIME_WAIT is no owner
        try:
            probe.bind((host, port))
        except OSError as e:
            raise _cannot_listen(host, port, e) from None


def stop_on_sigterm() -> None:
    """SIGTERM stops like Ctrl-C (its default would end the process without cleaning up: a
    `--workers` parent would leave its workers serving on the port). Main thread only."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        def stop(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop)


def _die_with_parent() -> bool:
    """Linux: have the kernel send this process SIGTERM when its parent dies (even by SIGKILL),
    so no worker outlives `mtkd serve --workers`. False if the parent is already gone."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    return os.getppid() != 1


def serve_worker(model: str, host: str, port: int, max_batch_rows: int, threads: int,
                 data: str | None = None) -> None:
    """One of `mtkd serve --workers N`: its own model and batcher on the shared port (the kernel
    spreads new connections over the workers), so JSON parsing and encoding, which hold the GIL,
    run on N cores."""
    import torch

    if not _die_with_parent():
        return
    try:
        server = make_server(Scorer.open(model, data=data), host, port, max_batch_rows, reuse_port=True)
    except MtkdError as e:  # one line, not a worker's traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)

    torch.set_num_threads(threads)
    server.run()


class PredictHandler(BaseHTTPRequestHandler):
    """POST /predict, GET /health, GET /metrics; the model, batcher and counters live on the server."""

    server: "ScoringServer"
    protocol_version = "HTTP/1.1"
    # headers and body leave in two writes; with Nagle on, the body waits for the client's
    # delayed ACK of the headers: 40 ms per keep-alive request (measured: 44 ms -> <1 ms)
    disable_nagle_algorithm = True

    def _send(self, code: int, body: dict[str, Any] | str) -> None:
        """A JSON answer, or plain text (GET /metrics)."""
        text = isinstance(body, str)
        data = (body if text else json.dumps(body, allow_nan=False)).encode()  # NaN is not JSON
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; version=0.0.4" if text else "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path == "/metrics":
            return self._send(200, self.server.metrics.render(self.server.batcher.calls, self.server.scorer.engine))
        if self.path != "/health":
            return self._send(404, {"error": f"no such path {self.path!r}; use POST /predict, GET /health "
                                             "or GET /metrics"})
        scorer = self.server.scorer
        self._send(200, {"status": "ok", "engine": scorer.engine, "model": str(scorer.source),
                         "task": scorer.schema.task, "columns": scorer.features, "pid": os.getpid()})

    def do_POST(self) -> None:  # noqa: N802
        t0 = time.perf_counter()
        self.server.answering(+1)
        try:
            code, body, rows = self._predict()
            self._send(code, body)
        finally:
            self.server.answering(-1)
        self.server.metrics.observe(code, rows, time.perf_counter() - t0)

    def _predict(self) -> tuple[int, dict[str, Any], int]:
        """(HTTP status, JSON answer, rows scored) of one POST."""
        if self.path != "/predict":
            return 404, {"error": f"no such path {self.path!r}; use POST /predict"}, 0
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True  # the body's end is unknown: the connection cannot be reused
            return 400, {"error": f"Content-Length {self.headers.get('Content-Length')!r} is not a number"}, 0
        if length < 0 or (length == 0 and "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()):
            self.close_connection = True  # the body's end is unknown: the connection cannot be reused
            return 411, {"error": "send the body with a Content-Length of zero or more bytes (no chunked encoding)"}, 0
        if length > MAX_BODY:
            self.close_connection = True  # the body is not read
            return 413, {"error": f"request body of {length} bytes is over {MAX_BODY}; send fewer rows"}, 0
        raw = self.rfile.read(length)
        try:  # UTF-8, as JSON between systems is (RFC 8259): json.loads would take UTF-16 too, whose
            text = raw.decode("utf-8-sig")  # true / false the boolean check below would not see
            body = json.loads(text or "null")
        except RecursionError:  # [[[[...: Python's parser recurses per level
            return 400, {"error": "body is not JSON this server reads: nested deeper than its parser allows; "
                                  'send {"rows": [{column: value, ...}, ...]}'}, 0
        except ValueError as e:  # not JSON, or not UTF-8
            return 400, {"error": f"body is not JSON (UTF-8): {e}"}, 0
        if not isinstance(body, dict) or "rows" not in body:
            return 400, {"error": 'expected a JSON object {"rows": [{column: value, ...}, ...]}'}, 0
        scorer = self.server.scorer
        if body["rows"] == []:
            return 200, {"probabilities": []} if scorer.binary else {"classes": scorer.classes, "probabilities": []}, 0
        try:
            batch = scorer.rows_to_batch(body["rows"], booleans="true" in text or "false" in text)
            p = self.server.batcher.score(batch)
        except MtkdError as e:
            return 400, {"error": str(e)}, 0
        except Stopped as e:
            self.close_connection = True
            return 503, {"error": str(e)}, 0
        except Exception as e:  # noqa: BLE001 - answer, do not drop the connection; the log keeps the trace
            self.log_error("scoring failed: %r", e)
            return 500, {"error": f"scoring failed: {type(e).__name__}: {e}"}, 0
        if p.ndim == 1:
            return 200, {"probabilities": p.tolist()}, len(p)
        return 200, {"classes": scorer.classes, "probabilities": p.tolist()}, len(p)

    def log_request(self, code: Any = "-", size: Any = "-") -> None:  # no line per request; errors still go to stderr
        pass
