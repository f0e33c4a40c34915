"""The API's arguments as a type checker sees them: subprocess's keywords as the API takes them, joined to the
sandbox options (options_typed.py, written from the option table), one TypedDict per kind of entry point.

Imported only under TYPE_CHECKING: a program that uses the API never runs this module, nor typing's TypedDict.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import IO, Any, TypedDict

from .options_typed import CommandOptions, Duration, EventHandler, SandboxOptions

__all__ = ["Args", "Duration", "Env", "EventHandler", "Events", "File", "StrOrBytesPath", "CommandOptions",
           "SandboxOptions", "ProcessKeywords", "RunKeywords", "PopenKeywords", "JobRunKeywords",
           "JobPopenKeywords", "CallArguments", "OutputArguments", "ShellArguments"]

StrOrBytesPath = str | bytes | os.PathLike[str] | os.PathLike[bytes]
Args = StrOrBytesPath | Sequence[StrOrBytesPath]  # a command: its argv, or one string (with shell=True)
File = int | IO[Any] | None  # PIPE, DEVNULL, STDOUT, a descriptor, a file object, or None: ours
Env = Mapping[str, StrOrBytesPath] | Mapping[bytes, StrOrBytesPath]
Events = list[tuple[str, dict[str, Any]]]  # lifecycle events: (name, fields), "finished" last


class ProcessKeywords(TypedDict, total=False):
    """subprocess.Popen's keywords for the command itself, which every entry point takes."""

    env: Env | None
    cwd: StrOrBytesPath | None
    shell: bool
    text: bool | None
    encoding: str | None
    errors: str | None
    universal_newlines: bool | None
    pass_fds: Sequence[int]
    executable: StrOrBytesPath | None
    bufsize: int
    close_fds: bool  # True alone: the job inherits nothing but pass_fds
    preexec_fn: None  # refused: it would run in the sandbox's reaper
    restore_signals: bool
    start_new_session: bool
    process_group: int | None
    pipesize: int
    startupinfo: None  # Windows only, as subprocess says on POSIX
    creationflags: int


class StdioKeywords(TypedDict, total=False):
    stdin: File
    stdout: File
    stderr: File


class RunKeywords(ProcessKeywords, SandboxOptions, total=False):
    """What run() and run_async() take in **options: the command's keywords and the sandbox's options."""


class PopenKeywords(StdioKeywords, ProcessKeywords, SandboxOptions, total=False):
    """What create_process() takes: Popen's keywords and the sandbox's options."""


class JobRunKeywords(ProcessKeywords, CommandOptions, total=False):
    """What a Job's run() takes in **options: the Job has the sandbox's options."""


class JobPopenKeywords(StdioKeywords, ProcessKeywords, CommandOptions, total=False):
    """What a Job's Popen() and an AsyncJob's create_process() take."""


class OutputArguments(ProcessKeywords, SandboxOptions, total=False):
    """What check_output() takes besides the command and its timeout: run()'s, less stdout and check."""

    stdin: File
    stderr: File
    input: bytes | str | None


class CallArguments(OutputArguments, total=False):
    """What call() and check_call() take besides the command and its timeout."""

    stdout: File


class ShellArguments(SandboxOptions, total=False):
    """What getoutput() and getstatusoutput() take besides the command, its encoding and errors."""

    env: Env | None
    cwd: StrOrBytesPath | None
    stdin: File
    input: bytes | str | None
    timeout: Duration | None
