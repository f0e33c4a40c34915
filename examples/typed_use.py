"""A typed program using the API, as mypy --strict sees it (tests/test_typing.py checks it): the sandbox
options are keywords with types, durations may be strings, and the results say what they carry."""

from __future__ import annotations

import asyncio
import os

import sandbox


def listing(path: str) -> list[str]:
    return sorted(os.listdir(path))


def synchronous() -> int:
    result = sandbox.run(["ls", "/mnt"], capture_output=True, text=True, timeout="1h", grace="500ms",
                         tmpfs=["/mnt"], ro_bind=[("/etc", "/mnt/etc")], net="none", rlimit={"NOFILE": 256})
    events: list[tuple[str, dict[str, object]]] = result.events
    usage: sandbox.Usage | None = result.usage
    print(result.returncode, len(events), usage)
    with sandbox.Popen(["cat"], stdin=sandbox.PIPE, stdout=sandbox.PIPE, propagation="private") as process:
        out, _ = process.communicate(b"data", timeout=30)
    with sandbox.Job(tmpfs=["/mnt"], grace=5, hostname="typed") as job:
        job.run(["touch", "/mnt/x"], check=True)
        names: list[str] = job.call(listing, "/mnt")
        print(names, job.Popen(["true"]).wait(timeout="10s"))
        job.run(["named", "-c", "true"], executable="sh", start_new_session=True, pipesize=1 << 16)
    unbuffered: sandbox.Popen[bytes] = sandbox.Popen(["true"], 0, process_group=0, close_fds=True)
    unbuffered.wait()
    background = sandbox.Popen(["sleep", "1"])
    background.detach()  # runs on by itself until it ends, or this program does
    print(background.detached)
    return sandbox.call(["true"], timeout=60, net="none") + len(out)


async def asynchronous() -> int:
    result = await sandbox.run_async(["true"], timeout=60.0, nice=5, on_exit=["true"], bufsize=0, creationflags=0)
    process = await sandbox.create_process(["cat"], stdin=sandbox.PIPE, stdout=sandbox.PIPE, umask=0o077)
    await process.communicate(b"data")
    (await sandbox.create_process(["true"])).detach()
    async with sandbox.AsyncJob(tmpfs=["/mnt"]) as job:
        names = await job.call(listing, "/mnt")
    return result.returncode + len(names)


if __name__ == "__main__":
    print(synchronous(), asyncio.run(asynchronous()))
