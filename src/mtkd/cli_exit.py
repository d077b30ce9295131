"""How the CLI ends: a user's error is one line and exit code 2, Ctrl-C or SIGTERM an
interruption (130 / 143), a full or read-only disk a line naming the file; a bug keeps its
traceback. Kept apart from the commands in `cli.py`."""

from __future__ import annotations

import errno
import os
import re
import signal
from typing import Any, Optional

import typer
from rich.console import Console

from mtkd.errors import MtkdError

err = Console(stderr=True, soft_wrap=True)

_NO_WRITE = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.EPERM}


def _errno_in(text: str) -> int | None:
    m = re.search(r"\[Errno (\d+)\]", text)
    return int(m.group(1)) if m else None


def _click_exceptions() -> tuple[type[Exception], type[Exception]]:
    """Click's usage-error and abort classes. Recent typer vendors click as `typer._click` and
    does not install `click`, so importing `click` would turn a usage error into a traceback."""
    try:
        from click.exceptions import Abort, ClickException
    except ModuleNotFoundError:
        from typer import Abort
        from typer._click.exceptions import ClickException
    return ClickException, Abort


def sigterm_as_interrupt() -> tuple[list[bool], Any]:
    """SIGTERM (kill, timeout, systemd, Kubernetes) unwinds like Ctrl-C, so the same cleanup runs
    (a prepare's .partial directory, predict's .tmp file); its default ends the process on the
    spot and leaves them. Main thread only; `serve` installs its own stop."""
    import threading

    flag: list[bool] = []
    if threading.current_thread() is not threading.main_thread():
        return flag, None

    def stop(signum: int, frame: Any) -> None:
        flag.append(True)
        raise KeyboardInterrupt

    return flag, signal.signal(signal.SIGTERM, stop)


def run_app(app: typer.Typer, argv: Optional[list[str]], terminated: list[bool]) -> int:
    try:
        # outside standalone mode typer returns what click's Exit carried instead of raising it:
        # Ctrl-C arrives here as 130 and `typer.Exit(n)` as n
        code = app(args=argv, standalone_mode=False)
        if isinstance(code, int) and not isinstance(code, bool) and code:
            if code == 130:
                err.print("terminated" if terminated else "interrupted")
                return 143 if terminated else 130
            return code
    except MtkdError as exc:
        from rich.text import Text

        # one write: under torchrun every rank reports, and two prints per rank interleaved
        # ("error: error: ..."); each rank's line says which rank it is
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = f"rank {os.environ.get('RANK', '?')}: " if world > 1 else ""
        err.print(Text.assemble(("error:", "bold red"), f" {rank}{exc}"), highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err.print("terminated" if terminated else "interrupted")
        return 143 if terminated else 130
    except SystemExit as exc:  # typer/click exits
        return int(exc.code or 0)
    except OSError as exc:
        code = exc.errno or _errno_in(str(exc))  # pyarrow's IO errors carry it in the text only
        if code not in _NO_WRITE or (code in (errno.EACCES, errno.EPERM) and not exc.filename):
            raise  # a permission error without a file is no disk's: a bug keeps its traceback
        what = f"{exc.filename}: " if exc.filename else ""
        fix = "free some space" if code in (errno.ENOSPC, errno.EDQUOT) else \
            "give this user access, or choose another place (--out, data.dir)"
        err.print(f"error: {what}{exc.strerror or exc}; {fix}, then run the command again (what was written "
                  "before is intact, and finished work is reused)", markup=False, highlight=False)
        return 2
    except Exception as exc:  # click usage errors come through here in non-standalone mode
        click_error, abort = _click_exceptions()
        if isinstance(exc, click_error):
            exc.show()
            return exc.exit_code
        if isinstance(exc, abort):
            if isinstance(exc.__context__, EOFError):  # click's name for an EOFError: a file cut short, not Ctrl-D
                raise exc.__context__
            err.print("aborted")
            return 1
        raise
    return 0
