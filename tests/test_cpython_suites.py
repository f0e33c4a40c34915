"""CPython's own test suites for subprocess and asyncio.subprocess, run through the API: test.test_subprocess with
subprocess's Popen, run, call, check_call, check_output, getoutput and getstatusoutput replaced (as that module sees
them) by sandbox's, and test.test_asyncio.test_subprocess with asyncio's create_subprocess_exec and
create_subprocess_shell replaced by sandbox.create_process. Each CPython test is one pytest item; a test that
cannot pass here is skipped with the documented difference that forbids it (docs/from-subprocess.md), or as a test
of CPython's own internals. Where the interpreter has no `test` package (Debian's python3 without
libpython3.X-testsuite), the file is skipped, saying so."""

from __future__ import annotations

import asyncio
import asyncio.subprocess
import subprocess
import types
import unittest
from collections.abc import Mapping
from typing import Any

import pytest

import sandbox

try:
    from test import test_subprocess as cpython_subprocess
    from test.test_asyncio import test_subprocess as cpython_asyncio
except ImportError as exc:  # pragma: no cover - depends on how the interpreter was packaged
    pytest.skip(f"CPython's test suite is not importable here ({exc}): install the interpreter's test package "
                "(Debian: libpython3.X-testsuite)", allow_module_level=True)

# subprocess.Popen's parameters in their positional order (after args).
POPEN_POSITIONAL = ("bufsize", "executable", "stdin", "stdout", "stderr", "preexec_fn", "close_fds", "shell", "cwd",
                    "env", "universal_newlines", "startupinfo", "creationflags", "restore_signals",
                    "start_new_session", "pass_fds")


def as_keywords(rest: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    if len(rest) > len(POPEN_POSITIONAL):
        raise TypeError(f"Popen() takes at most {len(POPEN_POSITIONAL) + 1} positional arguments")
    for name, value in zip(POPEN_POSITIONAL, rest, strict=False):
        if name in kwargs:
            raise TypeError(f"Popen() got multiple values for argument '{name}'")
        kwargs[name] = value
    return kwargs


class Popen(sandbox.Popen):
    """sandbox.Popen taking subprocess.Popen's arguments in subprocess's positional order."""

    def __init__(self, args: Any, *rest: Any, **kwargs: Any) -> None:
        super().__init__(args, **as_keywords(rest, kwargs))


def positional(function: Any) -> Any:
    def call(args: Any, *rest: Any, **kwargs: Any) -> Any:
        return function(args, **as_keywords(rest, kwargs))
    call.__name__ = function.__name__
    return call


class Through(types.ModuleType):
    """A module as a test module sees it: ours where given, the real module's for everything else."""

    def __init__(self, real: types.ModuleType, ours: Mapping[str, Any]) -> None:
        super().__init__(real.__name__)
        self.__dict__.update(ours)
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


SUBPROCESS = Through(subprocess, {
    "Popen": Popen,
    **{name: positional(getattr(sandbox, name)) for name in ("run", "call", "check_call", "check_output")},
    "getoutput": sandbox.getoutput,
    "getstatusoutput": sandbox.getstatusoutput,
})


async def create_subprocess_exec(program: Any, *args: Any, **kwargs: Any) -> sandbox.AsyncProcess:
    return await sandbox.create_process([program, *args], **kwargs)


async def create_subprocess_shell(cmd: Any, **kwargs: Any) -> sandbox.AsyncProcess:
    return await sandbox.create_process(cmd, shell=True, **kwargs)


ASYNCIO_STARTS = {"create_subprocess_exec": create_subprocess_exec, "create_subprocess_shell": create_subprocess_shell}
cpython_subprocess.subprocess = SUBPROCESS
cpython_asyncio.asyncio = Through(asyncio, ASYNCIO_STARTS)
cpython_asyncio.subprocess = Through(asyncio.subprocess, ASYNCIO_STARTS)

# Why a CPython test cannot pass through us: each a documented difference (docs/from-subprocess.md, the row
# named), or a test of CPython's own implementation rather than of subprocess's interface.
INTERNALS = ("tests CPython's implementation (_posixsubprocess, _fork_exec, vfork, _execute_child, _wait, "
             "subprocess's module namespace, a mock of subprocess.Popen or of asyncio's transport), not the interface")
PREEXEC_FN = "preexec_fn is refused: it would run in our reaper (docs/from-subprocess.md: preexec_fn)"
CLOSE_FDS = ("close_fds=False is refused: the job inherits only pass_fds (docs/from-subprocess.md: close_fds; "
             "asyncio's tests pass close_fds=False)")
RESTORE_SIGNALS = "restore_signals=False is refused (docs/from-subprocess.md: restore_signals)"
NOT_OUR_CHILD = ("waits for the job's PID itself (os.waitpid): the job is the reaper's child, not the caller's "
                 "(docs/from-subprocess.md: os.waitpid(process.pid))")
DROPPED = ("drops a running Popen and expects the child to live on: dropping the last reference stops the job "
           "(docs/from-subprocess.md: dropping the last reference)")
WITH_EXIT = ("leaves `with Popen` while the job may still run and expects its own exit status: leaving the block "
             "stops the job (docs/from-subprocess.md: with Popen(...))")
ID_RANGE = ("user=2**64 (group=) is our ValueError, not the C layer's OverflowError "
            "(docs/from-subprocess.md: user, group)")

SKIPS: dict[str, str] = {
    "ProcessTestCase.test__use_vfork": INTERNALS,
    "ProcessTestCase.test_repr": INTERNALS,
    "POSIXProcessTestCase.test_communicate_BrokenPipeError_stdin_close": INTERNALS,
    "POSIXProcessTestCase.test_communicate_BrokenPipeError_stdin_close_with_timeout": INTERNALS,
    "POSIXProcessTestCase.test_communicate_BrokenPipeError_stdin_flush": INTERNALS,
    "POSIXProcessTestCase.test_communicate_BrokenPipeError_stdin_write": INTERNALS,
    "MiscTests.test__all__": INTERNALS,
    "MiscTests.test_call_keyboardinterrupt_no_kill": INTERNALS,
    "MiscTests.test_context_manager_keyboardinterrupt_no_kill": INTERNALS,
    "MiscTests.test_run_keyboardinterrupt_no_kill": INTERNALS,
    "POSIXProcessTestCase.test_close_fds": CLOSE_FDS,
    "POSIXProcessTestCase.test_close_fds_after_preexec": CLOSE_FDS,
    "POSIXProcessTestCase.test_pipe_cloexec": CLOSE_FDS,
    "POSIXProcessTestCase.test_pipe_cloexec_real_tools": CLOSE_FDS,
    "POSIXProcessTestCase.test_group": CLOSE_FDS + "; " + ID_RANGE,
    "POSIXProcessTestCase.test_user": CLOSE_FDS + "; " + ID_RANGE,
    "POSIXProcessTestCase.test_preexec": PREEXEC_FN,
    "POSIXProcessTestCase.test_preexec_errpipe_does_not_double_close_pipes": PREEXEC_FN,
    "POSIXProcessTestCase.test_preexec_exception": PREEXEC_FN,
    "POSIXProcessTestCase.test_preexec_fork_failure": PREEXEC_FN,
    "POSIXProcessTestCase.test_preexec_gc_module_failure": PREEXEC_FN,
    "POSIXProcessTestCase.test_surrogates_error_message": PREEXEC_FN,
    "POSIXProcessTestCase.test_restore_signals": RESTORE_SIGNALS,
    "POSIXProcessTestCase.test_send_signal_race": NOT_OUR_CHILD,
    "POSIXProcessTestCase.test_stopped": NOT_OUR_CHILD,
    "POSIXProcessTestCase.test_leak_fast_process_del_killed": DROPPED,
    "POSIXProcessTestCase.test_zombie_fast_process_del": DROPPED,
    "ProcessTestCase.test_bufsize_equal_one_text_mode": WITH_EXIT,
    "ContextManagerTests.test_returncode": WITH_EXIT,
    "SubprocessMixin.test_pause_reading": INTERNALS,
    "SubprocessMixin.test_popen_error": INTERNALS,
    "SubprocessMixin.test_popen_error_with_stdin_pipe": INTERNALS,
    "SubprocessMixin.test_devnull_error": CLOSE_FDS,
    "SubprocessMixin.test_devnull_input": CLOSE_FDS,
    "SubprocessMixin.test_devnull_output": CLOSE_FDS,
    "SubprocessMixin.test_devstdin_input": CLOSE_FDS,
    "SubprocessMixin.test_empty_input": CLOSE_FDS,
    "SubprocessMixin.test_stdin_not_inheritable": CLOSE_FDS,
}


def through_us(base: type[unittest.TestCase]) -> type[unittest.TestCase]:
    """A subclass of CPython's TestCase (collected by pytest, one item per test) whose tests that cannot pass here
    are skipped, saying why."""
    names = [klass.__name__ for klass in base.__mro__]
    marked = {}
    for attribute in dir(base):
        if attribute.startswith("test"):
            reason = next((SKIPS[f"{n}.{attribute}"] for n in names if f"{n}.{attribute}" in SKIPS), None)
            if reason is not None:
                marked[attribute] = unittest.skip(reason)(getattr(base, attribute))
    return type(base.__name__, (base,), {"__module__": __name__, "__qualname__": base.__name__, **marked})


cpython_subprocess.setUpModule()
ProcessTestCase = through_us(cpython_subprocess.ProcessTestCase)
RunFuncTestCase = through_us(cpython_subprocess.RunFuncTestCase)
POSIXProcessTestCase = through_us(cpython_subprocess.POSIXProcessTestCase)
MiscTests = through_us(cpython_subprocess.MiscTests)
ProcessTestCaseNoPoll = through_us(cpython_subprocess.ProcessTestCaseNoPoll)
CommandsWithSpaces = through_us(cpython_subprocess.CommandsWithSpaces)
ContextManagerTests = through_us(cpython_subprocess.ContextManagerTests)
# asyncio's tests run once, under one child watcher: which watcher reaps asyncio's own children is asyncio's
# business, and create_process does not use one.
AsyncioSubprocessTests = through_us(cpython_asyncio.SubprocessThreadedWatcherTests)


def test_every_skipped_test_is_one_of_cpythons():
    """A skip that names no test (renamed in a newer CPython) would hide nothing and say nothing."""
    classes = {klass.__name__: klass for module in (cpython_subprocess, cpython_asyncio)
               for klass in vars(module).values() if isinstance(klass, type)}
    assert [key for key in SKIPS if not hasattr(classes.get(key.split(".")[0]), key.split(".")[1])] == []
