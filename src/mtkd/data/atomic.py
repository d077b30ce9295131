"""Atomic writes: a temporary file in the same directory, fsync, then rename.

A crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


_UMASK = os.umask(0o022)  # read once: mkstemp makes 0600 files, a plain open() honours the umask
os.umask(_UMASK)


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # as readable as the .npy arrays beside it (shared datasets, runs)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def pid_alive(pid: str) -> bool:
    """Whether the process that named a `.partial-PID` directory still runs. This process counts
    as not running: a rerun in the same process clears its own leftover too."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return int(pid) != os.getpid()


def sweep_partials(parent: Path, name: str) -> None:
    """Remove `.NAME.partial-PID` directories left by killed processes (SIGKILL, OOM, power): on
    full Criteo each is gigabytes, and nothing else ever reads them."""
    for stale in parent.glob(f".{name}.partial-*"):
        if not pid_alive(stale.name.rsplit("-", 1)[-1]):
            shutil.rmtree(stale, ignore_errors=True)
    for old in parent.glob(f".{name}.old-*"):  # `replace_dir` killed between its two renames
        if not pid_alive(old.name.rsplit("-", 1)[-1]):
            if (parent / name).exists():
                shutil.rmtree(old, ignore_errors=True)
            else:  # the new one never arrived: the old one is put back
                os.replace(old, parent / name)


@contextmanager
def exclusive(parent: Path, name: str, wait: bool = True,
              log: Callable[[str], None] = lambda s: None) -> Iterator[None]:
    """One process at a time writes `parent/name` (an export, an experiment): flock on
    `.NAME.lock`, released by the kernel when the holder dies. A waiter says whom it waits for;
    `wait=False` raises MtkdError naming the holder instead."""
    import fcntl

    from mtkd.errors import MtkdError

    parent.mkdir(parents=True, exist_ok=True)
    path = parent / f".{name}.lock"
    with open(path, "a+") as f:
        try:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                if not wait:
                    raise MtkdError(f"{parent / name}: process {holder} is working on it now; wait for it to "
                                    "finish (or stop it), then run again") from None
                log(f"{parent / name}: waiting for process {holder}, which is writing it")
                fcntl.flock(f, fcntl.LOCK_EX)
        except OSError as e:  # a filesystem without flock (Lustre -o noflock, some FUSE/CIFS): unlocked, as before
            if e.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            yield
            return
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def sweep_dead_files(parent: Path, pattern: str) -> None:
    """Remove `.NAME.PID.tmp` files matching `pattern` whose writer is no longer running: what a
    killed write left (a policy state is N x T x K floats, gigabytes on full Criteo)."""
    for stale in parent.glob(pattern):
        if not pid_alive(stale.name.rsplit(".", 2)[-2]):
            stale.unlink(missing_ok=True)


def replace_dir(tmp: Path, out: Path) -> None:
    """`tmp` (complete) takes the place of directory `out`: the old one is renamed aside first and
    put back if the second rename is interrupted; after a kill between the two, `sweep_partials`
    puts it back. So `out` holds the old or the new one, never neither."""
    if out.exists():
        trash = out.parent / f".{out.name}.old-{os.getpid()}"
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(out, trash)
        try:
            os.replace(tmp, out)
        except BaseException:  # Ctrl-C / SIGTERM between the renames: the old one goes back
            if not out.exists():
                os.replace(trash, out)
            raise
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, out)
