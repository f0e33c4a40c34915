"""Collecting a sandbox that has ended, on the caller's side: its on_exit hooks, then its finished event.

Every entry point of the API (Popen, run, Job and the asyncio variants) ends a sandbox here, once:
we first claim the hooks from the spawn server (which would run them if we had died), run them with
the one hook runner, and emit `finished` last.
"""

from __future__ import annotations

from collections.abc import Sequence

from sandboxed_run_helpers.shared import hooks

from ..client import ReaperClient
from . import spawner


def wrap_up(client: ReaperClient, on_exit: Sequence[str], returncode: int, job_status: bool = True) -> None:
    """returncode as subprocess gives it (negative: killed by that signal); job_status: whether the hooks
    learn the job's own status (a Job, a session of many commands, has none)."""
    status, sig = (returncode, None) if returncode >= 0 else (128 - returncode, -returncode)
    try:
        if on_exit:
            spawner.claim_hooks(client)
            env = hooks.environment(client.status if job_status else None, status if job_status else None,
                                    hooks.stop_reason(client.events))
            hooks.run_hooks(list(on_exit), env, client.emit, prog="sandbox")
    finally:
        hooks.finished(client.emit, status, sig)
