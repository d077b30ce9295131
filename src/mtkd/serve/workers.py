"""`mtkd serve --workers N`: N processes, each with its own model, sharing one port."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from multiprocessing.connection import wait
from pathlib import Path

from mtkd.errors import MtkdError
from mtkd.serve.scorer import Scorer
from mtkd.serve.server import check_port_free, serve_worker, stop_on_sigterm


def serve_workers(model: Path, host: str, port: int, max_batch_rows: int, workers: int,
                  log: Callable[[str], None] = print, data: Path | None = None) -> int:
    """`--workers N`: N spawned processes on one port (SO_REUSEPORT); if one dies, all stop.
    Returns the exit code of the worker that ended first (0 after a stop)."""
    if port == 0:
        raise MtkdError("--workers needs a fixed --port (each worker binds the same one)")
    check_port_free(host, port)
    Scorer.open(model, data=data)  # a model that cannot load fails here, once, with its message
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=serve_worker, args=(str(model), host, port, max_batch_rows, threads,
                                                               None if data is None else str(data)))
             for _ in range(workers)]
    stop_on_sigterm()  # a SIGTERM'd parent stops its workers (below) instead of orphaning them
    for p in procs:
        p.start()
    log(f"serving {model} on http://{host}:{port} with {workers} worker processes "
        f"({threads} thread(s) each); Ctrl-C stops")
    code = 0
    try:
        ended = wait([p.sentinel for p in procs])
        code = next(p.exitcode for p in procs if p.sentinel in ended) or 0
        log(f"a worker exited (code {code}); stopping the others")
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(timeout=30)
    return code
