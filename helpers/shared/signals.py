"""Signal names and numbers, as users type them and as we report them."""

from __future__ import annotations

import os
import signal

# Sent by the kernel to our helper when the process that started it dies (PR_SET_PDEATHSIG).
# A real-time signal nobody else uses, so it can never be mistaken for one meant for the job.
PARENT_GONE = signal.SIGRTMIN + 1
# Sent by the API's spawn server to its reapers when the caller it serves is gone. Not the same as
# PARENT_GONE: a reaper of the API outlives its spawn server as long as its caller lives.
CALLER_GONE = signal.SIGRTMIN + 2

# The signals a launcher passes on to the job when they are sent to the launcher alone.
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)

# si_code of a signal sent by kill(), pidfd_send_signal() or PR_SET_PDEATHSIG, and of one the kernel sends itself
# (a terminal's hangup, its Ctrl+C): siginfo.h's SI_USER and SI_KERNEL.
# Every signal a handler or SIG_IGN may take: what a new process gets at its default action.
CATCHABLE = frozenset(signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP})

SI_USER = 0
SI_KERNEL = 0x80

# The signals glibc keeps for itself (thread cancellation, set*id in every thread), between the standard ones
# and SIGRTMIN: no program can use them, but a process can start with them ignored (posix_spawn leaves them so).
GLIBC_RESERVED = tuple(range(signal.SIGSYS + 1, signal.SIGRTMIN))

# The signals the kernel raises for a fault of the process itself.
FAULTS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT)

# Signals that ask a process to end: once one of them reached the job, a stop on the caller's
# behalf (its death, its Ctrl+C, a cancellation) adds no stop signal on top of it.
ENDING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)

# Signals whose ignored state a job inherits from its caller, as it would through fork and exec.
# (Not SIGPIPE and SIGXFSZ: Python ignores those itself, and a job must not inherit that.)
_INHERITABLE_IGNORES = (*FORWARDED, signal.SIGALRM, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)


def inherited_ignores() -> list[int]:
    """The signals this process ignores, which its jobs should ignore too (nohup, `cmd &` in a script)."""
    ignored = []
    for sig in _INHERITABLE_IGNORES:
        try:
            if signal.getsignal(sig) == signal.SIG_IGN:
                ignored.append(int(sig))
        except ValueError:
            pass
    return ignored


def reset_for_helper(blocked: tuple[int, ...] = ()) -> None:
    """Undo what a caller may have left in a helper process's signal state that the helper relies on.

    An ignored SIGCHLD makes the kernel reap our children for us (Erlang's ports leave it so), so
    no wait would ever see them end; a blocked signal would never reach our signalfd or handler.
    The mask becomes exactly `blocked` in one step: a signal pending in those stays pending (for a
    signalfd), never runs a handler in between. The job's own inherited dispositions are passed on
    separately (inherited_ignores).
    """
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def from_outside(code: int, sender: int) -> bool:
    """Whether a signal PID 1 of a namespace read (si_code, si_pid, from its signalfd) came from outside that
    namespace: kill() or pidfd_send_signal() by a process it cannot see, or PR_SET_PDEATHSIG. The kernel writes
    si_pid 0 for such a sender and the sender's own PID for one inside; a process inside that writes its own
    siginfo (rt_sigqueueinfo, with si_pid 0 if it likes) must use a negative si_code, never SI_USER."""
    return code == SI_USER and sender == 0


def die_of_faults() -> None:
    """Default actions for the fault signals, for PID 1 of a namespace. A fault the kernel raises (si_code > 0)
    is forced: with the default action it lifts PID 1's immunity and kills it, as a crash must end any process.
    The same signal sent by a process (kill -SEGV 1 from inside, or from outside) is dropped, as PID 1 drops
    every signal it has no handler for. A handler of ours (or faulthandler's, inherited) would run for both."""
    for sig in FAULTS:
        signal.signal(sig, signal.SIG_DFL)


def parse_signal(text: str | int) -> int:
    """'TERM', 'SIGTERM', 'term', '15' and 'RTMIN+2' all name a signal; anything else is a ValueError.

    The signals glibc keeps for itself (32 and 33, below SIGRTMIN) are refused: no program can use them.
    """
    if isinstance(text, bool) or not isinstance(text, (int, str)):
        raise TypeError(f"a signal is a name or a number, not {text!r}")
    if isinstance(text, int):
        number = int(text)
    else:
        name = text.strip().upper()
        if name.isdigit():
            number = int(name)
        else:
            if not name.startswith("SIG"):
                name = "SIG" + name
            if name.startswith("SIGRTMIN") or name.startswith("SIGRTMAX"):
                base = signal.SIGRTMIN if name.startswith("SIGRTMIN") else signal.SIGRTMAX
                rest = name[8:]
                try:
                    number = base + int(rest) if rest else base
                except ValueError:
                    raise ValueError(f"unknown signal {text!r}") from None
            else:
                try:
                    number = int(signal.Signals[name])
                except KeyError:
                    raise ValueError(f"unknown signal {text!r}") from None
    if not 1 <= number <= signal.SIGRTMAX or signal.SIGSYS < number < signal.SIGRTMIN:
        raise ValueError(f"unknown signal {text!r}")
    return int(number)  # a plain int, never a Signals member: it travels on the wire


def describe_status(status: int | None) -> dict:
    """code/signal of a wait status, as the exited and hook events have them, and whether the signal left a core
    dump (the shell's "(core dumped)"; None: the status is not known)."""
    if status is None:
        return {"code": None, "signal": None, "core_dumped": None}
    if os.WIFSIGNALED(status):
        return {"code": None, "signal": signal_name(os.WTERMSIG(status)), "core_dumped": core_dumped(status)}
    return {"code": os.waitstatus_to_exitcode(status), "signal": None, "core_dumped": False}


def core_dumped(status: int | None) -> bool:
    """Whether a wait status says its process died of a signal that left a core dump."""
    return status is not None and os.WIFSIGNALED(status) and os.WCOREDUMP(status)


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        if signal.SIGRTMIN <= number <= signal.SIGRTMAX:
            return f"SIGRTMIN+{number - signal.SIGRTMIN}"
        return f"signal {number}"
