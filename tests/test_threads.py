"""Behaviour 6: the API works from any thread, concurrently; a job outlives the thread that started it
(PR_SET_PDEATHSIG follows the parent thread, so the helpers are never children of a caller's thread)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import sandbox
from support import stays, wait_for


def test_jobs_from_many_threads_at_once():
    def job(i: int) -> tuple[int, bytes]:
        result = sandbox.run(["sh", "-c", f"set -- /proc/[0-9]*; echo {i} $#"], capture_output=True)
        return result.returncode, result.stdout

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(job, range(40)))
    assert all(code == 0 for code, _ in results)
    # Each job sees two processes (the glob is the shell's own): its PID 1 and itself, in a PID namespace of its own.
    assert [out for _, out in results] == [f"{i} 2\n".encode() for i in range(40)]


def test_a_job_outlives_the_thread_that_started_it(tmp_path):
    beat = tmp_path / "heartbeat"
    holder: list[sandbox.Popen] = []

    def start() -> None:
        holder.append(sandbox.Popen(["sh", "-c", f"while :; do date +%s.%N > {beat}; sleep 0.05; done"]))

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    process = holder[0]
    assert wait_for(beat.exists)
    assert stays(lambda: process.poll() is None, 0.5), "the job died with the thread that started it"
    first = beat.read_text()
    assert wait_for(lambda: beat.read_text() != first), "the job died with the thread that started it"
    assert process.poll() is None
    assert process.stop(grace=1) == -15
