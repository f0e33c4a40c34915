"""subprocess.Popen's keywords that are not sandbox options: checked as subprocess checks them, and turned into
what the job's command and our pipes need; those that cannot mean anything for a sandboxed job are a TypeError
that says why and what to use instead."""

from __future__ import annotations

import operator
import subprocess
import warnings
from typing import Any, NamedTuple

from sandboxed_run_helpers.shared import command

NOT_CLOSING = ("close_fds=False is not supported: the job runs in another PID and mount namespace, started by the "
               "sandbox's reaper, and inherits none of your descriptors above 2; pass the ones it needs with "
               "pass_fds=[...]")
PREEXEC = ("preexec_fn is not supported: it would run in the sandbox's reaper (PID 1 of the job's namespaces), not "
           "in a fork of your program; use the sandbox's options (user=, group=, umask=, rlimit=, nice=, "
           "start_new_session=, process_group=), a shell command before the program (shell=True), or "
           "Job.call() for Python inside the sandbox")
NOT_RESTORING = ("restore_signals=False is not supported: the job starts with every signal at its default "
                 "action, except those your program ignores on purpose (nohup's SIGHUP, say), as a shell starts it")


class ProcessSettings(NamedTuple):
    """What subprocess's keywords ask of the command (program, session, pgroup) and of our pipes."""

    program: bytes  # run in place of argv[0]'s program (b"": argv[0]'s)
    session: bool
    pgroup: int  # -1: none
    bufsize: int  # our pipes' file objects' buffering, as open()'s; line_buffering: text and bufsize 1
    line_buffering: bool
    pipesize: int  # -1: the kernel's default


def text_mode(text: Any, universal_newlines: Any, encoding: Any, errors: Any) -> bool:
    """Whether our pipes speak text, as subprocess decides; its SubprocessError when text and universal_newlines
    are both given and disagree."""
    if text is not None and universal_newlines is not None and bool(text) != bool(universal_newlines):
        raise subprocess.SubprocessError("Cannot disambiguate when both text and universal_newlines are supplied "
                                         "but different. Pass one or the other.")
    return bool(text or universal_newlines or encoding or errors)


def settings_of(argv: list[bytes], shell: bool, text: bool, passing: bool, executable: Any, bufsize: Any,
                close_fds: Any, preexec_fn: Any, restore_signals: Any, startupinfo: Any, creationflags: Any,
                start_new_session: Any, process_group: Any, pipesize: Any) -> ProcessSettings:
    """subprocess's checks, in its order (TypeError and ValueError in its words), and ours for what cannot be.
    argv is the command as command.argv_of made it: with shell and an executable, its argv[0] (the shell's) is
    replaced, as subprocess replaces it."""
    if bufsize is None:
        bufsize = -1
    if not isinstance(bufsize, int):
        raise TypeError("bufsize must be an integer")
    if pipesize is None:
        pipesize = -1
    if not isinstance(pipesize, int):
        raise TypeError("pipesize must be an integer")
    if passing and not close_fds:
        warnings.warn("pass_fds overriding close_fds.", RuntimeWarning, stacklevel=4)  # subprocess's words
        close_fds = True
    if startupinfo is not None:
        raise ValueError("startupinfo is only supported on Windows platforms")
    if creationflags != 0:
        raise ValueError("creationflags is only supported on Windows platforms")
    if preexec_fn is not None:
        raise TypeError(PREEXEC)
    if not close_fds:
        raise TypeError(NOT_CLOSING)
    if not restore_signals:
        raise TypeError(NOT_RESTORING)
    pgroup = -1 if process_group is None else operator.index(process_group)
    if pgroup < -1:
        raise ValueError(f"process_group {pgroup}: a process group ID is 0 (a new one) or more")
    if pgroup > command.MAX_PGROUP:
        raise OverflowError("signed integer is greater than maximum")  # subprocess's (a pid_t)
    program = b""
    if executable is not None:
        program = command.path_of(executable, "executable")
        if shell:
            argv[0] = program
    line_buffering = False
    if bufsize == 1:
        if text:
            line_buffering, bufsize = True, -1  # the binary layer under a text one cannot line-buffer
        else:
            warnings.warn("line buffering (buffering=1) isn't supported in binary mode, the default buffer size "
                          "will be used", RuntimeWarning, stacklevel=4)
            bufsize = -1
    return ProcessSettings(program, bool(start_new_session), pgroup, bufsize, line_buffering, pipesize)


def command_of(args: Any, shell: bool, env: Any, cwd: Any, text: bool, passing: bool, keywords: dict[str, Any],
               root: bool = False) -> tuple[command.Command, ProcessSettings]:
    """The job's command and the settings of our pipes, from Popen's arguments; raises before anything starts.
    root: the sandbox has a root of its own (the default cwd is its /)."""
    argv = command.argv_of(args, shell)
    settings = settings_of(argv, shell, text, passing, **keywords)
    return command.command(argv, command.environment_of(env), command.directory_of(cwd, root=root), settings.program,
                           settings.session, settings.pgroup), settings
