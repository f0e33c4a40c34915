"""One command as the reaper will start it: argv, environment, directory, umask; checked before anything starts.

execve(2) refuses a command whose strings are too large (E2BIG). We check with the kernel's own
rule, so that whatever execve accepts runs and anything larger fails here, before any sandbox exists:
- each string (an argument, or NAME=VALUE) at most MAX_ARG_STRLEN (32 pages) including its NUL;
- all strings, the program's path included, plus one pointer per argument and variable, at most a
  quarter of the stack limit (RLIMIT_STACK), but never more than 6 MiB nor less than 32 pages.
The job's environment also carries our marks (SANDBOXED_RUN and co.) and our directory at the end of
its PATH, counted here too.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping

from . import linux, marks
from .errors import EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, SandboxError
from .records import Record

TYPE_CHECKING = False  # typing stays out of the spawn server, whose every reaper is a fork of it
if TYPE_CHECKING:
    from typing import Any

PAGE = 4096
MAX_ARG_STRLEN = 32 * PAGE
_STK_LIM = 8 << 20
POINTER = 8
PATH_MAX = 4096
MAX_PGROUP = 2**31 - 1  # a pid_t: libc would cut a larger number down to another group's ID
DEFAULT_PATH = b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Command(Record):
    """One command as the reaper starts it: what execve gets, where, with which umask; program (subprocess's
    executable=) is what runs in place of argv[0]'s (b"": argv[0]'s), found on PATH as argv[0] would be;
    session and pgroup are subprocess's start_new_session and process_group (-1: none) for the job's process."""

    argv: list[bytes]
    env: dict[bytes, bytes]
    cwd: bytes
    umask: int
    program: bytes = b""
    session: bool = False
    pgroup: int = -1


def argv_of(args: Any, shell: bool = False) -> list[bytes]:
    """The command line as bytes; ValueError/TypeError for what execve could not take."""
    if isinstance(args, os.PathLike) and shell:
        raise TypeError("path-like args is not allowed when shell is true")  # subprocess's refusal
    if isinstance(args, (str, bytes, os.PathLike)):
        args = [args]
    else:
        args = list(args)
    if shell:
        args = ["/bin/sh", "-c", *args]
    if not args:
        raise ValueError("the command is empty")
    for a in args:
        if not isinstance(a, (str, bytes, os.PathLike)):
            raise TypeError(f"command arguments must be str, bytes or path-like, not {type(a).__name__}")
    argv = [os.fsencode(a) for a in args]
    if not argv[0]:
        raise ValueError("the command name is empty")
    if any(b"\0" in a for a in argv):
        raise ValueError("a command argument contains a NUL byte")
    return argv


def environment_of(env: Mapping | None) -> dict[bytes, bytes]:
    if env is None:
        # The mapping os.environ and os.environb share, as bytes (POSIX): copied at C speed, not key by key.
        data = getattr(os.environb, "_data", None)
        return dict(data) if type(data) is dict else dict(os.environb)
    out = {}
    for key, value in env.items():
        for item in (key, value):
            if not isinstance(item, (str, bytes, os.PathLike)):
                raise TypeError(f"environment names and values must be str or bytes, not {item!r}")
        k, v = os.fsencode(key), os.fsencode(value)
        if b"=" in k or b"\0" in k or b"\0" in v or not k:
            raise ValueError(f"invalid environment variable {key!r}")
        out[k] = v
    return out


def edited(env: dict[bytes, bytes], unsetenv: Any, setenv: Any) -> dict[bytes, bytes]:
    """env after --unsetenv NAME and then --setenv NAME=VALUE, as the command line gives them (in place)."""
    for name in unsetenv:
        env.pop(os.fsencode(name), None)
    for name, value in setenv:
        env[os.fsencode(name)] = os.fsencode(value)
    return env


def path_of(value: object, name: str) -> bytes:
    """A path the caller gave (str, bytes or PathLike) as bytes; TypeError or ValueError naming the keyword."""
    if not isinstance(value, (str, bytes, os.PathLike)):
        raise TypeError(f"{name} must be a path, not {value!r}")
    path = os.fsencode(value)
    if not path or b"\0" in path:
        raise ValueError(f"{name} {value!r} is not a path")
    return path


def directory_of(cwd: str | bytes | os.PathLike | None, name: str = "cwd", root: bool = False) -> bytes:
    """The job's working directory as an absolute path: cwd, or the caller's own (name: the option, as the
    caller spells it). SandboxError if the caller's directory has no path (deleted, say): the job would
    otherwise run somewhere else, where its relative paths mean other files. root: the job has a root of its
    own (--root), where the caller's directory means nothing: cwd is taken from its /, which is the default."""
    if cwd is not None:
        path = path_of(cwd, name)
        if path.startswith(b"/"):
            return os.path.normpath(path)
        if root:
            return os.path.normpath(b"/" + path)
    elif root:
        return b"/"
    try:
        here = os.getcwdb()
    except OSError as exc:
        raise SandboxError(f"the current directory has no path ({exc.strerror}; was it deleted?): change to one "
                           f"that exists, or give an absolute {name}") from None
    return here if cwd is None else os.path.normpath(os.path.join(here, path))


def command(argv: list[bytes], env: dict[bytes, bytes], cwd: bytes, program: bytes = b"", session: bool = False,
            pgroup: int = -1) -> Command:
    """One command, checked to fit execve, with the caller's umask as it is now."""
    check_size(argv, env)
    return Command(argv, env, cwd, linux.current_umask(), program, session, pgroup)


def check_size(argv: list[bytes], env: dict[bytes, bytes]) -> None:
    """SandboxError (errno E2BIG, exit status 126, as a shell gives) if execve would refuse this command."""
    marked = marks.marked_as_long(env, DEFAULT_PATH)  # our marks, and our directory on PATH, count too
    strings = [*argv, *(k + b"=" + v for k, v in marked.items())]
    longest = max(strings, key=len)
    if len(longest) + 1 > MAX_ARG_STRLEN:
        what = "an argument" if longest in argv else "an environment variable"
        raise SandboxError(f"{os.fsdecode(argv[0])}: argument list too long: {what} has {len(longest)} bytes, "
                           f"execve takes at most {MAX_ARG_STRLEN - 1}", EXIT_NOT_EXECUTABLE, errno.E2BIG)
    count = len(strings)
    used = sum(len(s) + 1 for s in strings)
    # The program's path counts too; looked for only near the limit, as it costs a PATH search.
    used += PATH_MAX if used + PATH_MAX <= _limit() - count * POINTER else len(_program(argv[0], marked)) + 1
    room = _limit() - count * POINTER
    if used > room:
        raise SandboxError(f"{os.fsdecode(argv[0])}: argument list too long: its arguments and environment take "
                           f"{used + count * POINTER} bytes, execve takes at most {_limit()} here "
                           "(a quarter of the stack limit, ulimit -s)", EXIT_NOT_EXECUTABLE, errno.E2BIG)


def _limit() -> int:
    import resource

    stack = resource.getrlimit(resource.RLIMIT_STACK)[0]
    limit = _STK_LIM // 4 * 3 if stack == resource.RLIM_INFINITY else min(_STK_LIM // 4 * 3, stack // 4)
    return max(limit, MAX_ARG_STRLEN)


def _program(name: bytes, env: dict[bytes, bytes]) -> bytes:
    """The path execve will get, as the reaper finds it (a shell's PATH search); the name if not found here."""
    if b"/" in name:
        return name
    for directory in env.get(b"PATH", DEFAULT_PATH).split(b":"):
        candidate = os.path.join(directory or b".", name)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return name


def resolve(name: bytes, search_path: bytes) -> bytes:
    """Find the program as a shell would, telling 'not found' (127) from 'not executable' (126)."""
    if b"/" in name:
        candidates = [name]
    else:
        candidates = [os.path.join(d or b".", name) for d in search_path.split(b":")]
    denied = None
    for candidate in candidates:
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and os.access(candidate, os.X_OK):
            return candidate
        denied = denied or candidate
    shown = os.fsdecode(name)
    if denied is not None:
        what = "is a directory" if os.path.isdir(denied) else "permission denied"
        raise SandboxError(f"{shown}: cannot execute: {what}", EXIT_NOT_EXECUTABLE)
    raise SandboxError(f"{shown}: command not found", EXIT_NOT_FOUND)
