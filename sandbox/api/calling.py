"""job.call's two ends in the caller: the call pickled, the interpreter that runs it inside the job, and its
outcome. The job's side is sandboxed_run_helpers.inside.call.

A function of the caller's script pickles as __main__.name, so the interpreter inside must run the script
to find it, as multiprocessing does (as __mp_main__, so that its `if __name__ == "__main__":` block does
not run). A script without that guard would start its sandbox again inside the sandbox: job.call refuses
it before anything runs, and the interpreter inside refuses any sandbox its script starts while loading.
"""

from __future__ import annotations

import ast
import io
import os
import pickle
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from sandboxed_run_helpers.shared.errors import SandboxError

if TYPE_CHECKING:
    from types import FrameType

_R = TypeVar("_R")


class RemoteTraceback(Exception):
    """The traceback of an exception raised by job.call() inside the sandbox (set as __cause__)."""

    def __str__(self) -> str:
        return str(self.args[0])


class UnguardedScript(RuntimeError):
    """job.call needs the caller's script inside the sandbox, and running it there would start the sandbox
    again: its top level is not under `if __name__ == "__main__":`."""


def unguarded_message(script: str, line: int | None = None) -> str:
    where = f" (line {line} runs outside it)" if line else ""
    return (f"job.call needs {script} inside the sandbox to find the function there, and running it would start "
            f"the sandbox again: put the script's top-level code under `if __name__ == \"__main__\":`{where}")


class _Pickler(pickle.Pickler):
    """Notes whether what it pickles refers to the caller's script (__main__)."""

    needs_main = False

    def reducer_override(self, obj: Any) -> Any:
        if type(obj).__module__ == "__main__" or (
                (isinstance(obj, type) or callable(obj)) and getattr(obj, "__module__", None) == "__main__"):
            self.needs_main = True
        return NotImplemented


class _Unpickler(pickle.Unpickler):
    """The outcome a call sends back: what the job's interpreter took from the caller's script (loaded there as
    __mp_main__) is the caller's __main__ here."""

    def find_class(self, module: str, name: str) -> Any:
        return super().find_class("__main__" if module == "__mp_main__" else module, name)


def payload(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[bytes, str]:
    """What the job's interpreter reads: our sys.argv (the script's top level reads it there as here, as with
    multiprocessing), then the call, pickled; and the caller's script if the job needs it to unpickle the call
    ("" if not). UnguardedScript if that script would start the sandbox again inside it."""
    buffer = io.BytesIO()
    pickle.dump(list(sys.argv), buffer, pickle.DEFAULT_PROTOCOL)
    pickler = _Pickler(buffer, pickle.DEFAULT_PROTOCOL)
    try:
        pickler.dump((func, args, kwargs))
    except (pickle.PicklingError, TypeError, AttributeError) as exc:  # what pickle says of what it cannot take
        raise TypeError(f"job.call: cannot send {func!r} and its arguments to the job: {exc}") from None
    script = main_script() if pickler.needs_main else ""
    if pickler.needs_main and not script:
        raise TypeError(f"job.call: {func!r} needs the caller's __main__, which has no script file the job could "
                        "load (python -c, standard input, the interactive prompt): define it in a module or a "
                        "script file")
    if script:
        line = unguarded_line(script)
        if line is not None:
            raise UnguardedScript(unguarded_message(script, line))
    return buffer.getvalue(), script


def main_script() -> str:
    """The caller's script ("" if __main__ has none): any file, as runpy loads it (an executable without .py too)."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return os.path.abspath(main_file) if main_file and os.path.isfile(main_file) else ""


def unguarded_line(script: str) -> int | None:
    """The line of the script's top level that is running now outside `if __name__ == "__main__":` (it leads
    to this call, and would run again inside the job), or None."""
    main = sys.modules.get("__main__")
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals is getattr(main, "__dict__", None):
            return None if any(first <= frame.f_lineno <= last for first, last in _guards(script)) \
                else frame.f_lineno
        frame = frame.f_back
    return None  # not called from the script's top level (a thread of it, say): the job's side still checks


def _guards(script: str) -> list[tuple[int, int]]:
    """The lines of the script's top-level `if __name__ == "__main__":` blocks."""
    try:
        with open(script, "rb") as f:
            tree = ast.parse(f.read(), script)
    except (OSError, SyntaxError, ValueError):
        return [(1, sys.maxsize)]  # cannot tell: leave it to the job's side
    guards = []
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and len(node.test.ops) == 1 \
                and isinstance(node.test.ops[0], ast.Eq):
            sides = {ast.dump(node.test.left), ast.dump(node.test.comparators[0])}
            if sides == {ast.dump(ast.Name("__name__", ast.Load())), ast.dump(ast.Constant("__main__"))}:
                guards.append((node.lineno, node.end_lineno or node.lineno))
    return guards


def channel() -> tuple[socket.socket, socket.socket]:
    """A connected pair: ours, and theirs, passed to the call under its own number, which is above 2 (a caller
    with a closed stdin would otherwise get 0 for it, the job's stdin)."""
    ours, theirs = socket.socketpair()
    if theirs.fileno() < 3:
        import fcntl

        high = socket.socket(fileno=fcntl.fcntl(theirs.fileno(), fcntl.F_DUPFD_CLOEXEC, 3))
        theirs.close()
        theirs = high
    return ours, theirs


def call_argv(script: str, fd: int) -> list[str]:
    """A fresh interpreter that imports what we can (our sys.path, and the script if the call needs it) and runs
    one call from descriptor fd, passed under its number (sandboxed_run_helpers.inside.call)."""
    paths = [p for p in sys.path if p and os.path.isabs(p)]
    boot = (f"import sys; sys.path[:0] = {paths!r}; "
            f"from sandboxed_run_helpers.inside.call import main; main({script!r}, {int(fd)})")
    return [sys.executable, "-c", boot]


def call_outcome(func: Callable[..., _R], chunks: list[bytes], returncode: int | None) -> _R:
    """The result a call sent back, or its exception raised here with the remote traceback as cause."""
    if not chunks:
        raise SandboxError(f"the call of {func!r} ended without a result (exit status {returncode})")
    try:
        outcome = _Unpickler(io.BytesIO(b"".join(chunks))).load()
    except Exception as exc:  # noqa: BLE001 - a class of the outcome that this side cannot rebuild
        raise TypeError(f"job.call: the outcome of {func!r} cannot be loaded here: {exc}") from None
    if outcome[0] == "ok":
        result: _R = outcome[1]  # what func returned, pickled inside
        return result
    _, error, remote = outcome
    raise error from RemoteTraceback(f"\n\"\"\"\n{remote}\"\"\"")


def refuse_while_loading_main() -> None:
    """Called before any sandbox starts: inside job.call's interpreter, while it runs the caller's script to find
    the function, a sandbox the script starts is the script's unguarded top level running again."""
    inside = sys.modules.get("sandboxed_run_helpers.inside.call")
    script = getattr(inside, "loading_main", "")
    if script:
        raise UnguardedScript(unguarded_message(script))
