"""sandboxed-run: run commands in a private mount and PID namespace that the kernel tears down.

The public API: run, Popen (subprocess's interface), SandboxError, and PIPE/STDOUT/DEVNULL.
Names load on first use so that the command-line tool pays only for what it needs.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing into every helper process

__all__ = ["run", "Popen", "Job", "JobProcess", "RemoteTraceback", "run_async", "create_process", "AsyncProcess",
           "AsyncJob", "SandboxError", "CommandNotFound",
           "NotExecutable", "PIPE", "STDOUT", "DEVNULL"]

_HOMES = {
    "run": "popen", "Popen": "popen", "PIPE": "popen", "STDOUT": "popen", "DEVNULL": "popen",
    "Job": "job", "JobProcess": "job", "RemoteTraceback": "job",
    "run_async": "aio", "create_process": "aio", "AsyncProcess": "aio", "AsyncJob": "aio",
    "SandboxError": "errors", "CommandNotFound": "errors", "NotExecutable": "errors",
}

if TYPE_CHECKING:
    from .aio import AsyncJob, AsyncProcess, create_process, run_async
    from .errors import CommandNotFound, NotExecutable, SandboxError
    from .job import Job, JobProcess, RemoteTraceback
    from .popen import DEVNULL, PIPE, STDOUT, Popen, run


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'sandbox' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value
