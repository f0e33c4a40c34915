"""The job's process attributes: resource limits, niceness, I/O priority, no_new_privs, capabilities, and
who it runs as (user, group, supplementary groups).

They are set in the process the reaper forks for a command, after fork and before exec (commands.py),
so they belong to the job's processes and everything those start, never to the reaper: it keeps its
priority, its limits and its capabilities to tear the sandbox down. Each step that the kernel refuses
raises Refused with one line in words (the caller may be the command line or the API).
"""

from __future__ import annotations

import errno
import os

from . import credentials, linux
from .limits import UNLIMITED, cap_numbers, rlimit_number
from .options import SandboxSpec


class Refused(Exception):
    """The kernel refused an attribute; str() says which, and what it would need."""


def apply(spec: SandboxSpec, oom_score_adj: int | None, inherited: tuple | None = None) -> None:
    """Set spec's attributes on this (freshly forked) process, in the order their privileges allow: limits,
    priorities and oom_score_adj while every capability is still there, no_new_privs, then the capabilities
    dropped last (dropping CAP_SETPCAP early would forbid the bounding set's changes). What needs a file
    (oom_score_adj, the number of capabilities) comes before the limits: NOFILE=3 leaves no descriptor free.
    inherited: the caller's own attributes where they differ from ours (credentials.inherited()), taken
    first, so that the sandbox's options (nice=, rlimit=) override them."""
    if oom_score_adj is not None:
        # The reaper made itself the last the OOM killer picks; the job is as killable as its caller was.
        credentials.set_oom_score_adj(oom_score_adj)
    if spec.landlock_read or spec.landlock_write:
        _make_ruleset(spec)
    dropped = cap_numbers(spec.cap_drop or spec.cap_keep, linux.last_cap(), bool(spec.cap_keep)) \
        if spec.cap_drop or spec.cap_keep else []
    if inherited is not None:
        credentials.take(inherited, with_nice=spec.nice is None)
    if spec.rlimit:
        _rlimits(spec.rlimit)
    if spec.nice is not None:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, spec.nice)
        except OSError as exc:
            raise Refused(f"cannot set the niceness {spec.nice}: {_why(exc, 'CAP_SYS_NICE', 'a lower niceness')}") \
                from None
    if spec.ionice is not None:
        ioclass, level = spec.ionice
        try:
            linux.ioprio_set(ioclass, level)
        except OSError as exc:
            raise Refused(f"cannot set the I/O priority: {_why(exc, 'CAP_SYS_ADMIN', 'the realtime class')}") from None
    if spec.no_new_privs:
        import prctl

        prctl.set_no_new_privs(1)
    if spec.switches_user:
        _switch(spec, dropped)
    elif spec.cap_drop or spec.cap_keep:
        _drop_caps(dropped, every=spec.cap_drop == ("ALL",))


_ruleset: int | None = None  # the job's Landlock ruleset, made by apply() and entered by seal()


def _make_ruleset(spec: SandboxSpec) -> None:
    global _ruleset
    from . import landlock

    try:
        _ruleset = landlock.ruleset(spec.landlock_read, spec.landlock_write)
    except landlock.Unavailable as exc:
        raise Refused(str(exc)) from None
    except OSError as exc:
        raise Refused(f"cannot make the job's Landlock ruleset: {exc.strerror or exc}") from None


def seal(spec: SandboxSpec) -> None:
    """The last steps before exec, after the signal mask is reset (nothing of ours makes a call after them but
    the exec, and a line if the exec fails): the Landlock domain, once whatever we import is read, then the
    syscall filter, built before and loaded last."""
    global _ruleset
    built = None
    if spec.syscall_filter:
        from . import syscall_filter

        try:
            built = syscall_filter.build(spec.syscall_filter, spec.syscall_errno)
        except OSError as exc:
            raise Refused(f"cannot build the syscall filter: {exc.strerror or exc}") from None
    if _ruleset is not None:
        from . import landlock

        fd, _ruleset = _ruleset, None
        try:
            landlock.enter(fd)
        except OSError as exc:
            raise Refused(f"cannot confine the job with Landlock: {exc.strerror or exc}") from None
    if built is not None:
        try:
            built.load()
        except OSError as exc:
            raise Refused(f"cannot install the syscall filter: {exc.strerror or exc}") from None


def _why(exc: OSError, cap: str, what: str) -> str:
    if exc.errno in (errno.EPERM, errno.EACCES):
        return f"permission denied ({what} needs root: {cap})"
    return exc.strerror or str(exc)


def _rlimits(wanted: tuple[tuple[str, int | None, int | None], ...]) -> None:
    import resource

    for name, soft, hard in wanted:
        number = rlimit_number(name)
        current = resource.getrlimit(number)
        limit = (current[0] if soft is None else soft, current[1] if hard is None else hard)
        if soft is None and limit[1] != UNLIMITED and (limit[0] == UNLIMITED or limit[0] > limit[1]):
            limit = (limit[1], limit[1])  # ":HARD" below the current soft limit takes the soft one down with it
        try:
            resource.setrlimit(number, limit)
        except (OSError, ValueError) as exc:
            # The resource module says EPERM as a ValueError ("not allowed to raise maximum limit").
            denied = isinstance(exc, OSError) and exc.errno in (errno.EPERM, errno.EACCES) or "raise" in str(exc)
            reason = "permission denied (raising a hard limit needs root: CAP_SYS_RESOURCE)" if denied \
                else exc.strerror if isinstance(exc, OSError) else "the soft limit would be above the hard limit"
            shown = ":".join("unlimited" if v == UNLIMITED else str(v) for v in limit)
            raise Refused(f"cannot set the resource limit {name} to {shown}: {reason}") from None


def _drop_caps(caps: list[int], every: bool) -> None:
    import prctl

    try:
        if every:
            linux.clear_ambient_caps()
        else:
            for cap in caps:
                linux.lower_ambient_cap(cap)
        for cap in caps:
            if prctl.capbset_read(cap):
                prctl.capbset.drop(cap)
        # One capset for the three sets; for root, the bounding and inheritable sets are what survives exec.
        prctl.set_caps((caps, prctl.CAP_INHERITABLE, False), (caps, prctl.CAP_PERMITTED, False),
                       (caps, prctl.CAP_EFFECTIVE, False))
    except OSError as exc:
        raise Refused(f"cannot drop capabilities: {_why(exc, 'CAP_SETPCAP', 'dropping from the bounding set')}") \
            from None


def _switch(spec: SandboxSpec, dropped: list[int]) -> None:
    """Take spec's ids, as setpriv --reuid --regid --groups does: the bounding set first (CAP_SETPCAP is still
    there), then groups, gid and uid (real, effective, saved). A job switched to a uid other than 0 keeps no
    capability but those of --cap-keep, which it keeps as ambient ones so that they survive its exec; uid 0
    keeps root's (an exec gives root every capability of its bounding set anyway)."""
    import prctl

    unprivileged = spec.user is not None and spec.user != 0
    kept = [cap for cap in range(linux.last_cap() + 1) if cap not in dropped] if spec.cap_keep else []
    try:
        for cap in dropped:
            if prctl.capbset_read(cap):
                prctl.capbset.drop(cap)
    except OSError as exc:
        raise Refused(f"cannot drop capabilities: {_why(exc, 'CAP_SETPCAP', 'dropping from the bounding set')}") \
            from None
    if unprivileged and kept:
        prctl.set_keepcaps(True)  # the permitted set survives setresuid; an exec clears the flag
    try:
        if spec.extra_groups is not None:
            os.setgroups(list(spec.extra_groups))
        if spec.group is not None:
            os.setresgid(spec.group, spec.group, spec.group)
        if spec.user is not None:
            os.setresuid(spec.user, spec.user, spec.user)
    except OSError as exc:
        raise Refused(f"cannot switch the job to uid {spec.user}, gid {spec.group}: "
                      f"{_why(exc, 'CAP_SETUID and CAP_SETGID', 'another user')}") from None
    if not unprivileged:
        if dropped:
            _drop_caps(dropped, every=spec.cap_drop == ("ALL",))
        return
    others = [cap for cap in range(linux.last_cap() + 1) if cap not in kept]
    try:
        linux.clear_ambient_caps()
        prctl.set_caps((others, prctl.CAP_INHERITABLE, False), (others, prctl.CAP_PERMITTED, False),
                       (others, prctl.CAP_EFFECTIVE, False), (kept, prctl.CAP_PERMITTED, True),
                       (kept, prctl.CAP_INHERITABLE, True), (kept, prctl.CAP_EFFECTIVE, True))
        for cap in kept:
            linux.raise_ambient_cap(cap)
        prctl.set_keepcaps(False)
    except OSError as exc:
        raise Refused(f"cannot keep the capabilities of {spec.user}: {exc.strerror or exc}") from None
