"""One sandbox run in the foreground of this process: what the sandboxed-run command does.

This process is the launcher: it forks the reaper itself (no spawn server: it is single-threaded
and lives exactly as long as the job), passes on the signals sent to it alone, and ends the way a
shell expects: with the job's status, or by dying of the job's signal.
"""

from __future__ import annotations

import os
import resource
import select
import signal
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

from . import linux
from .client import ReaperClient
from .errors import EXIT_FAILURE, EXIT_TIMEOUT, SandboxError
from .signals import FORWARDED
from .spec import SandboxSpec
from .status import say


class Outcome(NamedTuple):
    status: int | None  # the main process's wait status, if it ran
    timed_out: bool
    error: SandboxError | None


def watch_signals() -> linux.SignalFd:
    """Block the signals we pass on, so that they queue for us instead of killing us (also while the
    sandbox starts), and read them from a signalfd from now on."""
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    return linux.SignalFd(FORWARDED)


def run_foreground(spec: SandboxSpec, request: dict, timeout: float | None,
                   on_event: Callable[[str, dict], None] | None,
                   on_start: Callable[[int], None] | None, sigfd: linux.SignalFd) -> Outcome:
    """Run one command (a request of command.request) in a sandbox forked from this process, to its end.

    Every signal we get is relayed to the job; the reaper drops those that reached the job by themselves
    (a terminal's Ctrl+C, a signal to our whole process group or cgroup), so the job gets each one once.
    A signal during start-up reaches the job as soon as it runs.
    """
    from sandboxed_run_helpers import launch

    request = {**request, "spec": spec.to_wire(), "pgid": None, "lifeline": "parent"}
    stdio = tuple(None if fd in CLOSED_AT_START else fd for fd in (0, 1, 2))
    reaper_pid, pidfd, sock = launch.start(request, stdio)  # type: ignore[arg-type]
    if on_start is not None:
        on_start(pidfd)  # given the reaper's pidfd, as soon as there is a sandbox to outlive
    client = ReaperClient(reaper_pid, pidfd, sock, on_event)
    deadline = linux.deadline_after(timeout)
    timed_out = False
    while not client.gone:
        watched = [sigfd.fileno(), client.pidfd if client.closed else client.sock.fileno()]
        ready = select.select(watched, [], [], None if timed_out else linux.wait_seconds(deadline))[0]
        for signo, _code, _sender in sigfd.read():
            client.relay(signo)
        if not client.closed:
            client.pump(0)
        elif client.pidfd in ready:
            client.gone = True
        if deadline is not None and not timed_out and time.monotonic() >= deadline:
            timed_out = True
            client.stop(None, "timeout")
    client.close()
    return Outcome(client.status, timed_out, client.error)


def shell_status(outcome: Outcome) -> tuple[int, int | None]:
    """The status a shell sees for an outcome, and the signal we die of to give it (None: we exit with it)."""
    if outcome.error is not None and outcome.status is None:
        return outcome.error.exit_code, None
    if outcome.timed_out:
        return EXIT_TIMEOUT, None
    status = outcome.status if outcome.status is not None else 0
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status), os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status), None


def exit_like(outcome: Outcome, before_exit: Callable[[int, int | None], None] | None = None) -> int:
    """The shell status for an outcome; a job killed by a signal kills us with the same signal.

    before_exit(status, signal) runs last before that (the --on-exit hooks, the finished event).
    """
    if outcome.error is not None and outcome.status is None:
        say(str(outcome.error))
    code, sig = shell_status(outcome)
    if before_exit is not None:
        before_exit(code, sig)
    if sig is not None:
        reraise(sig)
    return code


def reraise(sig: int) -> None:
    """Die of sig as the job did, so a calling shell stops its script on a Ctrl+C (as util-linux unshare does)."""
    flush_standard_streams()
    # Our own core dump would only hide the job's.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sig not in (signal.SIGKILL, signal.SIGSTOP):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
    os.kill(os.getpid(), sig)
    os._exit(128 + sig if sig < 128 else EXIT_FAILURE)


def flush_standard_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:  # None: Python started with that descriptor closed
                stream.flush()
        except (OSError, ValueError):
            pass


# The standard descriptors that were closed when we started: the job gets them closed too.
CLOSED_AT_START: set[int] = set()


def hold_standard_descriptors() -> None:
    """Fill closed 0, 1, 2 with /dev/null (close-on-exec), so that none of our own descriptors, which
    take the lowest free number, ever lands there and reaches the job as its stdin or stdout."""
    CLOSED_AT_START.update(linux.fill_closed_stdio())
    # Python set these to None: what we would have printed goes nowhere, as the caller asked.
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w")  # lives as long as the process
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")
