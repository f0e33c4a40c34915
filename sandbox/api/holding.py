"""What every API object that holds a sandbox says of it (Popen, Job and their asyncio twins): its PID 1 and its
name, as the reaper's client knows them."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..client import ReaperClient
    from .typed import Events


class HoldsASandbox:
    if TYPE_CHECKING:
        @property
        def client(self) -> ReaperClient:  # an attribute or a property of the class that holds one
            ...

    @property
    def reaper_pid(self) -> int:
        """The PID (as the caller sees it) of the sandbox's PID 1 (a Job's reaper, for a command of a Job)."""
        return self.client.reaper_pid

    @property
    def events(self) -> Events:
        """The lifecycle events so far (of the sandbox, or of this command of a Job): (name, fields), in order."""
        self.client.pump(0)
        return list(self.client.events)

    @property
    def name(self) -> str | None:
        """The name the sandbox is listed under while it runs (name=, or a generated one; None: unlisted)."""
        return self.client.name
