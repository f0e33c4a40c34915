"""What a run cost: the figures the reaper collects when a sandbox (or one command of a sandbox.Job) ends.

The reaper is PID 1 of the sandbox's PID namespace, so every process of the job ends as a child it
waits for (its own, or an orphan it inherited): getrusage(RUSAGE_CHILDREN) then gives the CPU time of
them all and the largest resident set of any one, on any machine. Where the sandbox has a cgroup of
its own (a limit option asked for one), its files add exact figures for the whole sandbox, the reaper
included: memory peak, I/O bytes and the most tasks at once.
"""

from __future__ import annotations

from .records import Record


class Usage(Record):
    """What a sandbox, or one command of a sandbox.Job, used. None: not counted here (no cgroup, or a
    kernel without that file). For a command of a Job only wall, user, system and max_rss are its own.

    wall         seconds from its start until its last process was gone
    user         CPU seconds in user mode, every process together
    system       CPU seconds in the kernel, every process together
    max_rss      bytes: the largest resident set of one process
    memory_peak  bytes: the cgroup's peak, every process at once, page cache included (memory.peak)
    io_read      bytes read from block devices (io.stat, every device)
    io_write     bytes written to block devices
    pids_peak    the most tasks (processes and threads, the reaper included) alive at once (pids.peak)
    oom_kills    processes the kernel killed because the sandbox ran out of memory (memory.events)
    """

    wall: float
    user: float
    system: float
    max_rss: int
    memory_peak: int | None = None
    io_read: int | None = None
    io_write: int | None = None
    pids_peak: int | None = None
    oom_kills: int | None = None

    def as_dict(self) -> dict:
        """The figures as the finished event and --json-status carry them (seconds rounded to microseconds)."""
        out = dict(zip(self._fields, self, strict=True))
        for key in ("wall", "user", "system"):
            out[key] = round(out[key], 6)
        return out

    def describe(self) -> str:
        """One line for a person, as -v prints it."""
        from .limits import shown_size

        parts = [f"{self.wall:.2f} s wall", f"{self.user:.2f} s user + {self.system:.2f} s system CPU"]
        if self.memory_peak is not None:
            parts.append(f"memory peak {shown_size(self.memory_peak)} (largest process {shown_size(self.max_rss)})")
        else:
            parts.append(f"largest process {shown_size(self.max_rss)}")
        if self.io_read is not None and self.io_write is not None:
            parts.append(f"I/O {shown_size(self.io_read)} read, {shown_size(self.io_write)} written")
        if self.pids_peak is not None:
            parts.append(f"{self.pids_peak} tasks at most")
        if self.oom_kills:
            parts.append(f"{self.oom_kills} killed for lack of memory")
        return ", ".join(parts)
