"""Collecting a sandbox that has ended, on the caller's side: its on_exit hooks, then its finished event.

Every entry point of the API (Popen, run, Job and the asyncio variants) ends a sandbox here, once:
we first claim the hooks from the spawn server (which would run them if we had died), run them with
the one hook runner, and emit `finished` last.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sandboxed_run_helpers.shared import hooks
from sandboxed_run_helpers.shared.errors import SandboxError
from sandboxed_run_helpers.shared.status import say

from ..client import ReaperClient
from . import spawner


def wrap_up(client: ReaperClient, on_exit: Sequence[str], returncode: int | None, error: str | None = None) -> None:
    """returncode as subprocess gives it (negative: killed by that signal; for a command that could not
    start, its exit status, 127 or 126, with error saying why); None for a Job, a session of many
    commands, which has no status of its own (its hooks learn none, its finished event says 0). Nothing in a
    forked copy of the caller: the sandbox is the parent's, and so are its hooks and events."""
    if client.forked_away:
        return
    if client.unresponsive is not None:
        say(client.unresponsive, "sandbox")
    if returncode is None:
        status, sig = None, None
    else:
        status, sig = (returncode, None) if returncode >= 0 else (128 - returncode, -returncode)
    try:
        if on_exit:
            spawner.claim_hooks(client)
            env = hooks.environment(client.status, status, hooks.stop_reason(client.events))
            hooks.run_hooks(list(on_exit), env, client.emit, prog="sandbox")
    finally:
        hooks.finished(client.emit, 0 if status is None else status, sig, error, client.usage, client.status)


@contextmanager
def not_started(on_event: Callable[[str, dict[str, Any]], None] | None) -> Iterator[None]:
    """A SandboxError raised in the block (the host refuses the spec, the spawn server fails, the command is too
    large) ends a call whose sandbox never ran: its finished event says so, the status and the error, as it
    does when the reaper fails; then the error goes on to the caller."""
    try:
        yield
    except SandboxError as exc:
        hooks.finished(on_event, exc.exit_code, None, str(exc))
        raise
