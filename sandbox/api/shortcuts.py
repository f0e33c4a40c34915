"""subprocess's module functions, each a run() in a sandbox: call, check_call, check_output, getoutput and
getstatusoutput take what run() takes (sandbox options included) and answer as subprocess's do.

Where subprocess kills the child on a timeout or Ctrl+C (SIGKILL, at once), these end the sandbox as run()
does: the stop signal, the grace period, then TimeoutExpired (or KeyboardInterrupt) once everything is gone.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from typing import Any

from .popen import PIPE, STDOUT, run

Args = str | bytes | os.PathLike | Sequence[str | bytes | os.PathLike]


def call(args: Args, *, timeout: float | None = None, **kwargs: Any) -> int:
    """Run args in a sandbox, wait, and return its exit status (negative: the signal that killed it)."""
    return run(args, timeout=timeout, **kwargs).returncode


def check_call(args: Args, *, timeout: float | None = None, **kwargs: Any) -> int:
    """call(), raising CalledProcessError for a status other than 0; returns 0."""
    run(args, timeout=timeout, check=True, **kwargs)
    return 0


def check_output(args: Args, *, timeout: float | None = None, **kwargs: Any) -> Any:
    """The job's standard output (bytes; str with text=True, encoding= or errors=), or CalledProcessError for
    a status other than 0. input=None is an empty input, as in subprocess."""
    for name in ("stdout", "check"):
        if name in kwargs:
            raise ValueError(f"{name} argument not allowed, it will be overridden.")
    if "input" in kwargs and kwargs["input"] is None:
        text = kwargs.get("text") or kwargs.get("universal_newlines") or kwargs.get("encoding") or kwargs.get("errors")
        kwargs["input"] = "" if text else b""
    return run(args, stdout=PIPE, timeout=timeout, check=True, **kwargs).stdout


def getstatusoutput(cmd: str | bytes | os.PathLike, *, encoding: str | None = None, errors: str | None = None,
                    **kwargs: Any) -> tuple[int, str]:
    """(status, output) of a shell command: stdout and stderr together, as text, one trailing newline taken off."""
    try:
        data = check_output(cmd, shell=True, text=True, stderr=STDOUT, encoding=encoding, errors=errors, **kwargs)
        status = 0
    except subprocess.CalledProcessError as exc:
        data, status = exc.output, exc.returncode
    if data[-1:] == "\n":
        data = data[:-1]
    return status, data


def getoutput(cmd: str | bytes | os.PathLike, *, encoding: str | None = None, errors: str | None = None,
              **kwargs: Any) -> str:
    """The output (stdout and stderr) of a shell command, as getstatusoutput() gives it."""
    return getstatusoutput(cmd, encoding=encoding, errors=errors, **kwargs)[1]
