"""sandboxed-run: run commands in a private mount and PID namespace that the kernel tears down.

The public API: run, Popen (subprocess's interface) and subprocess's call, check_call, check_output,
getoutput and getstatusoutput, Job (several commands in one sandbox), their
asyncio variants (run_async, create_process, AsyncJob), list_running and stop_running (running
sandboxes, by name), SandboxError and its kinds, Usage (what a run used), CompletedProcess (subprocess's,
with the run's events and usage), and PIPE/STDOUT/DEVNULL. The package is typed (py.typed): every sandbox
option is a typed keyword. Names load on first use so that the command-line tool pays only for what it needs.

Layout: sandbox/api runs in the caller's program, sandbox/cli is the sandboxed-run command, and
sandbox/client.py is the end of a reaper that both hold; the helper processes and the layer every
process shares (the option table, the wire, Linux calls) are in sandboxed_run_helpers.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing into every helper process

__all__ = ["run", "Popen", "Job", "JobProcess", "RemoteTraceback", "UnguardedScript", "run_async", "create_process",
           "AsyncProcess", "AsyncJob", "CompletedProcess", "SandboxError", "CommandNotFound", "NotExecutable", "Usage",
           "PIPE", "STDOUT", "DEVNULL", "list_running", "stop_running", "RunningSandbox", "SandboxNotFound",
           "SandboxNotPermitted", "call", "check_call", "check_output", "getoutput", "getstatusoutput"]

_HOMES = {
    "run": ".api.popen", "Popen": ".api.popen", "PIPE": ".api.popen", "STDOUT": ".api.popen",
    "DEVNULL": ".api.popen", "CompletedProcess": ".api.popen",
    "Job": ".api.job", "JobProcess": ".api.job", "RemoteTraceback": ".api.calling",
    "UnguardedScript": ".api.calling",
    "run_async": ".api.aio", "create_process": ".api.aio", "AsyncProcess": ".api.aio", "AsyncJob": ".api.aio",
    "SandboxError": "sandboxed_run_helpers.shared.errors", "CommandNotFound": "sandboxed_run_helpers.shared.errors",
    "NotExecutable": "sandboxed_run_helpers.shared.errors", "Usage": "sandboxed_run_helpers.shared.usage",
    "list_running": ".running", "stop_running": ".running", "RunningSandbox": ".running",
    "SandboxNotFound": "sandboxed_run_helpers.shared.errors",
    "SandboxNotPermitted": "sandboxed_run_helpers.shared.errors",
    "call": ".api.shortcuts", "check_call": ".api.shortcuts", "check_output": ".api.shortcuts",
    "getoutput": ".api.shortcuts", "getstatusoutput": ".api.shortcuts",
}

if TYPE_CHECKING:
    from sandboxed_run_helpers.shared.errors import (
        CommandNotFound,
        NotExecutable,
        SandboxError,
        SandboxNotFound,
        SandboxNotPermitted,
    )
    from sandboxed_run_helpers.shared.usage import Usage

    __version__: str  # the installed package's version (see _version)

    from .api.aio import AsyncJob, AsyncProcess, create_process, run_async
    from .api.calling import RemoteTraceback, UnguardedScript
    from .api.job import Job, JobProcess
    from .api.popen import DEVNULL, PIPE, STDOUT, CompletedProcess, Popen, run
    from .api.shortcuts import call, check_call, check_output, getoutput, getstatusoutput
    from .running import RunningSandbox, list_running, stop_running


def __getattr__(name: str) -> object:
    if name == "__version__":
        globals()[name] = _version()
        return globals()[name]
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'sandbox' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """What a REPL completes: the public API, although its names load on first use."""
    return sorted({*__all__, "__version__", *(name for name in globals() if name.startswith("__"))})


def _version() -> str:
    """The installed package's version: its metadata, written from pyproject.toml, is the one source."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sandboxed-run")
    except PackageNotFoundError:
        return "0+unknown"  # imported from a checkout that was never installed
