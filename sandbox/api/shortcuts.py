"""subprocess's module functions, each a run() in a sandbox: call, check_call, check_output, getoutput and
getstatusoutput take what run() takes (sandbox options included) and answer as subprocess's do.

Where subprocess kills the child on a timeout or Ctrl+C (SIGKILL, at once), these end the sandbox as run()
does: the stop signal, the grace period, then TimeoutExpired (or KeyboardInterrupt) once everything is gone.
"""

from __future__ import annotations

import os
import subprocess
from typing import TYPE_CHECKING, Any

from .keywords import SANDBOX_KEYWORDS, with_options
from .popen import PIPE, STDOUT, run

if TYPE_CHECKING:
    from typing import Unpack

    from .typed import Args, CallArguments, Duration, OutputArguments, ShellArguments

# What getoutput and getstatusoutput set themselves, or refuse.
SET_BY_SHELL = ("stdout", "stderr", "check", "capture_output", "shell", "text", "universal_newlines")


@with_options(*SANDBOX_KEYWORDS, passes_to=run, without=("check", "capture_output"))
def call(args: Args, *, timeout: Duration | None = None, **kwargs: Unpack[CallArguments]) -> int:
    """Run args in a sandbox, wait, and return its exit status (negative: the signal that killed it)."""
    return run(args, timeout=timeout, **kwargs).returncode


@with_options(*SANDBOX_KEYWORDS, passes_to=run, without=("check", "capture_output"))
def check_call(args: Args, *, timeout: Duration | None = None, **kwargs: Unpack[CallArguments]) -> int:
    """call(), raising CalledProcessError for a status other than 0; returns 0."""
    run(args, timeout=timeout, check=True, **kwargs)
    return 0


@with_options(*SANDBOX_KEYWORDS, passes_to=run, without=("stdout", "check", "capture_output"))
def check_output(args: Args, *, timeout: Duration | None = None, **kwargs: Unpack[OutputArguments]) -> Any:
    """The job's standard output (bytes; str with text=True, encoding= or errors=), or CalledProcessError for
    a status other than 0. input=None is an empty input, as in subprocess."""
    for name in ("stdout", "check"):
        if name in kwargs:  # subprocess's words
            raise ValueError(f"{name} argument not allowed, it will be overridden.")
    if "input" in kwargs and kwargs["input"] is None:
        text = kwargs.get("text") or kwargs.get("universal_newlines") or kwargs.get("encoding") or kwargs.get("errors")
        kwargs["input"] = "" if text else b""
    return run(args, stdout=PIPE, timeout=timeout, check=True, **kwargs).stdout


@with_options(*SANDBOX_KEYWORDS, passes_to=run, without=SET_BY_SHELL)
def getstatusoutput(cmd: str | bytes | os.PathLike[str] | os.PathLike[bytes], *, encoding: str | None = None,
                    errors: str | None = None, **kwargs: Unpack[ShellArguments]) -> tuple[int, str]:
    """(status, output) of a shell command: stdout and stderr together, as text, one trailing newline taken off."""
    try:
        data = check_output(cmd, shell=True, text=True, stderr=STDOUT, encoding=encoding, errors=errors, **kwargs)
        status = 0
    except subprocess.CalledProcessError as exc:
        data, status = exc.output, exc.returncode
    if data[-1:] == "\n":
        data = data[:-1]
    return status, data


@with_options(*SANDBOX_KEYWORDS, passes_to=run, without=SET_BY_SHELL)
def getoutput(cmd: str | bytes | os.PathLike[str] | os.PathLike[bytes], *, encoding: str | None = None,
              errors: str | None = None, **kwargs: Unpack[ShellArguments]) -> str:
    """The output (stdout and stderr) of a shell command, as getstatusoutput() gives it."""
    return getstatusoutput(cmd, encoding=encoding, errors=errors, **kwargs)[1]
