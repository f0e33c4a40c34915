"""Collecting a sandbox that has ended, on the caller's side: its on_exit hooks, then its finished event.

Every entry point of the API (Popen, run, Job and the asyncio variants) ends a sandbox here, once:
we first claim the hooks from the spawn server (which would run them if we had died), run them with
the one hook runner, and emit `finished` last.
"""

from __future__ import annotations

from collections.abc import Sequence

from sandboxed_run_helpers.shared import hooks
from sandboxed_run_helpers.shared.status import say

from ..client import ReaperClient
from . import spawner


def wrap_up(client: ReaperClient, on_exit: Sequence[str], returncode: int | None, error: str | None = None) -> None:
    """returncode as subprocess gives it (negative: killed by that signal; for a command that could not
    start, its exit status, 127 or 126, with error saying why); None for a Job, a session of many
    commands, which has no status of its own (its hooks learn none, its finished event says 0)."""
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
        hooks.finished(client.emit, 0 if status is None else status, sig, error, client.usage)
