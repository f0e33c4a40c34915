"""asyncio: run_async, create_process, AsyncJob; cancellation runs a shielded escalation to the end."""

from __future__ import annotations

import asyncio
import signal
import subprocess

import pytest

import sandbox
from support import PYTHON, ctrl_c_on_the_seed, log_lines, signal_job, signal_of, wait_for

ASYNC_SEED = """
import asyncio, os, sandbox
async def main():
    await sandbox.run_async(["./trap_script"])
try:
    asyncio.run(main())
except KeyboardInterrupt:
    left = [n for n in "abc" if os.path.exists(n)]
    print("KeyboardInterrupt after the job ended; left:", left or "nothing", flush=True)
    raise
"""


def test_ctrl_c_under_asyncio_run_lets_the_trap_finish(tmp_path, no_leftovers):
    status, output, _ = ctrl_c_on_the_seed([PYTHON, "-c", ASYNC_SEED], tmp_path, no_leftovers)
    assert b"KeyboardInterrupt after the job ended; left: nothing" in output, output
    assert signal_of(status) == signal.SIGINT


def test_a_cancelled_task_waits_for_the_jobs_cleanup(tmp_path):
    argv, log = signal_job(tmp_path, cleanup=1.0)

    async def main() -> list[str]:
        task = asyncio.ensure_future(sandbox.run_async(argv, grace=5))
        await asyncio.get_running_loop().run_in_executor(None, wait_for, lambda: log_lines(log))
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return log_lines(log)
        raise AssertionError("the cancellation did not propagate")

    assert asyncio.run(main())[1:] == ["SIGTERM", "cleaned"], "the cancellation went on before the cleanup ended"


def test_deliver_cancel_chooses_the_policy(tmp_path):
    argv, log = signal_job(tmp_path, cleanup=0.2)

    async def interrupt(process: sandbox.AsyncProcess) -> None:
        process.send_signal(signal.SIGUSR1)

    async def main() -> None:
        task = asyncio.ensure_future(sandbox.run_async(argv, deliver_cancel=interrupt))
        await asyncio.get_running_loop().run_in_executor(None, wait_for, lambda: log_lines(log))
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(main())
    assert log_lines(log)[1:] == ["SIGUSR1", "cleaned"]


def test_many_concurrent_jobs_from_tasks():
    async def main() -> list[bytes]:
        count = "set -- /proc/[0-9]*; echo {} $#"
        results = await asyncio.gather(*(sandbox.run_async(["sh", "-c", count.format(i)], capture_output=True)
                                         for i in range(30)))
        return [r.stdout for r in results]

    # Each job sees two processes (the glob is the shell's own): its PID 1 and itself.
    assert asyncio.run(main()) == [f"{i} 2\n".encode() for i in range(30)]


def test_create_process_streams_and_timeout():
    async def main() -> None:
        process = await sandbox.create_process(["cat"], stdin=sandbox.PIPE, stdout=sandbox.PIPE)
        assert await process.communicate(b"through the sandbox") == (b"through the sandbox", None)
        assert process.returncode == 0
        with pytest.raises(subprocess.TimeoutExpired):
            await sandbox.run_async(["sleep", "30"], timeout=0.5, grace=1)

    asyncio.run(main())


def double(x: int) -> int:
    return 2 * x


def test_async_job_shares_namespaces_and_calls(tmp_path):
    async def main() -> tuple[bytes, int]:
        async with sandbox.AsyncJob(tmpfs=[str(tmp_path)]) as job:
            await job.run(["touch", f"{tmp_path}/inside"], check=True)
            listing = (await job.run(["ls", str(tmp_path)], capture_output=True)).stdout
            return listing, await job.call(double, 21)

    assert asyncio.run(main()) == (b"inside\n", 42)
    assert not (tmp_path / "inside").exists()
