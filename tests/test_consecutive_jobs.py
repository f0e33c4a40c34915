"""Jobs of one caller in turn: the spawn server hands a reaper that served a job the caller's next one, and
nothing of the first reaches the second (processes, mounts, environment, descriptors, signal dispositions,
resource limits, umask, working directory, its name); a sandbox that changed the reaper itself (a network,
other namespaces) gets a reaper of its own, which ends with it.

Each test first checks that the jobs did share their reaper (the same PID 1, seen from outside), so that the
isolation it checks is the reused reaper's, not that of two fresh ones.
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import signal
import subprocess
from collections.abc import Callable
from typing import TypeVar

import pytest

import sandbox
from support import PYTHON, wait_for

T = TypeVar("T")
U = TypeVar("U")
SHOW_PROCESSES = "for p in /proc/[0-9]*; do [ -e $p/cmdline ] && echo ${p#/proc/}; done"


def popen_reaper(argv: list[str], **options: object) -> tuple[int, sandbox.CompletedProcess]:
    """Run argv to its end through Popen; the reaper's PID (as we see it) and the outcome."""
    with sandbox.Popen(argv, stdout=sandbox.PIPE, **options) as process:
        out, _ = process.communicate(timeout=60)
        return process.reaper_pid, sandbox.CompletedProcess(argv, process.returncode, out, usage=process.usage)


def in_turn(first: Callable[[], tuple[int, T]], second: Callable[[], tuple[int, U]]) -> tuple[T, U]:
    """The outcomes of first and second run one after the other by the same reaper. A change of the host's
    mount table in between (another test's mount) retires the reaper, rightly: then the pair runs again."""
    for _ in range(10):
        one, done = first()
        two, seen = second()
        if one == two:
            return done, seen
    raise AssertionError("ten pairs of jobs in turn, none shared its reaper")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_jobs_in_turn_share_the_reaper_and_it_ends_with_the_server():
    reaper, _ = in_turn(lambda: popen_reaper(["true"]), lambda: popen_reaper(["true"]))
    assert reaper.returncode == 0
    shared = popen_reaper(["true"])[0]
    assert alive(shared)
    sandbox.api.spawner.shut_down(timeout=30)
    assert wait_for(lambda: not alive(shared), timeout=15)


def test_no_process_of_a_job_reaches_the_next():
    # The first leaves a sleeper in a session of its own; the sandbox ends it with the main process.
    done, seen = in_turn(lambda: popen_reaper(["sh", "-c", "setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $!"]),
                         lambda: popen_reaper(["sh", "-c", SHOW_PROCESSES]))
    shown = sorted(int(p) for p in seen.stdout.split())
    assert int(done.stdout) not in shown and shown[0] == 1, shown
    assert len(shown) <= 3, shown  # PID 1, the shell, and at most the subshell listing


def test_no_mount_of_a_job_reaches_the_next(tmp_path):
    mark = tmp_path / "made-inside"
    done, seen = in_turn(
        lambda: popen_reaper(["sh", "-c", f"mount -t tmpfs job-one /mnt && touch /mnt/x && mkdir -p /run/t && "
                                          f"mount -t tmpfs job-one-too /run/t && touch {mark} && echo ok"],
                             tmpfs=["/srv"]),
        lambda: popen_reaper(["sh", "-c", "cat /proc/self/mountinfo; ls -A /mnt"]))
    assert done.stdout == b"ok\n"
    table = seen.stdout.decode()
    assert "job-one" not in table and " /srv " not in table and not re.search(r"^x$", table, re.M)
    assert mark.exists()  # written through to the host's file system, where it stays


def test_no_descriptor_environment_or_directory_of_a_job_reaches_the_next(tmp_path):
    read_end, write_end = os.pipe()

    def first() -> tuple[int, sandbox.CompletedProcess]:
        return popen_reaper(["sh", "-c", "echo $SECRET; ls /proc/self/fd"], pass_fds=(write_end,),
                            env={"SECRET": "job-one", "PATH": os.environ["PATH"]}, cwd=tmp_path)

    try:
        done, seen = in_turn(first, lambda: popen_reaper(["sh", "-c", "env; pwd; ls /proc/self/fd"]))
    finally:
        os.close(write_end)
        os.close(read_end)
    assert done.stdout.split()[0] == b"job-one" and str(write_end).encode() in done.stdout.split()
    out = seen.stdout.decode()
    assert "job-one" not in out and str(tmp_path) not in out
    assert str(write_end) not in out.split()[-4:]  # the listing's last lines: 0, 1, 2 and ls's own


def test_the_reaper_holds_no_more_descriptors_after_each_job():
    def job_then_reaper_fds() -> tuple[int, list[str]]:
        read_end, write_end = os.pipe()
        try:
            reaper, _ = popen_reaper(["true"], name=f"t-fds-{os.getpid()}", pass_fds=(write_end,))
        finally:
            os.close(read_end)
            os.close(write_end)
        return reaper, sorted(os.listdir(f"/proc/{reaper}/fd"))

    after_one, after_two = in_turn(job_then_reaper_fds, job_then_reaper_fds)
    assert after_one == after_two


def sig_ignored(status: str) -> int:
    return int(re.search(r"^SigIgn:\s*([0-9a-f]+)$", status, re.M).group(1), 16)


def test_no_ignored_signal_of_a_job_reaches_the_next():
    def first() -> tuple[int, sandbox.CompletedProcess]:
        previous = signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # the job inherits it, as from subprocess
        try:
            return popen_reaper(["sh", "-c", "kill -TERM 1; kill -USR2 1; cat /proc/self/status"])
        finally:
            signal.signal(signal.SIGUSR1, previous)

    done, seen = in_turn(first, lambda: popen_reaper(["cat", "/proc/self/status"]))
    assert sig_ignored(done.stdout.decode()) & (1 << (signal.SIGUSR1 - 1))
    assert seen.returncode == 0
    assert not sig_ignored(seen.stdout.decode()) & (1 << (signal.SIGUSR1 - 1))


def test_no_limit_or_umask_of_a_job_reaches_the_next():
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    umask = os.umask(0o022)
    os.umask(umask)
    done, seen = in_turn(lambda: popen_reaper(["sh", "-c", "ulimit -n; umask"], rlimit=["NOFILE=77"], umask=0o077),
                         lambda: popen_reaper(["sh", "-c", "ulimit -n; umask"]))
    assert done.stdout.split() == [b"77", b"0077"]
    assert seen.stdout.split() == [str(soft).encode(), b"%04o" % umask]


def test_the_name_of_a_job_is_free_for_the_next():
    name = f"t-consecutive-{os.getpid()}"
    in_turn(lambda: popen_reaper(["true"], name=name), lambda: popen_reaper(["true"], name=name))
    assert name not in [s.name for s in sandbox.list_running()]


def test_usage_is_each_jobs_own():
    def busy() -> tuple[int, sandbox.CompletedProcess]:
        return popen_reaper(["sh", "-c", "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done"])

    first, second = in_turn(busy, lambda: popen_reaper(["true"]))
    assert first.usage.user + first.usage.system > 0.02
    assert second.usage.user + second.usage.system < (first.usage.user + first.usage.system) / 4


@pytest.mark.parametrize("option", [{"net": "none"}, {"unshare": ["uts"]}, {"hostname": "elsewhere"}])
def test_a_sandbox_that_changes_the_reaper_gets_its_own(option):
    in_turn(lambda: popen_reaper(["true"]), lambda: popen_reaper(["true"]))
    own, done = popen_reaper(["true"], **option)
    assert done.returncode == 0
    assert wait_for(lambda: not alive(own), timeout=15)  # it ended with its sandbox


def test_run_async_jobs_in_turn_see_nothing_of_each_other():
    async def two() -> tuple[str, str]:
        first = await sandbox.run_async(["sh", "-c", "sleep 1000 & echo $$"], capture_output=True)
        second = await sandbox.run_async(["sh", "-c", SHOW_PROCESSES], capture_output=True)
        return first.stdout.decode(), second.stdout.decode()

    _, shown = asyncio.run(two())
    assert sorted(int(p) for p in shown.split())[0] == 1 and len(shown.split()) <= 3, shown


def test_an_idle_reaper_ends_after_a_while():
    reaper, _ = popen_reaper(["true"])
    assert wait_for(lambda: not alive(reaper), timeout=30)
    again, done = popen_reaper(["true"])
    assert done.returncode == 0 and again != reaper


def test_an_idle_reaper_is_out_of_the_callers_process_group():
    with sandbox.Popen(["sleep", "1000"]) as process:
        assert os.getpgid(process.reaper_pid) == os.getpgrp()  # its job's signals from the terminal reach it
        process.kill()
        process.wait()
        reaper = process.reaper_pid
    # Idle: a stop or a Ctrl+C for the caller's group (a later job's kill -STOP 0) must not reach it.
    assert alive(reaper) and os.getpgid(reaper) != os.getpgrp()
    again, done = popen_reaper(["true"])
    assert done.returncode == 0


# What a job inherits from PID 1 that a root job can change in PID 1 from outside it.
SHOW_INHERITED = ("ulimit -n; ulimit -Hc; nice; cat /proc/self/oom_score_adj /proc/self/coredump_filter; "
                  "taskset -p $$ | sed 's/.*: //'; chrt -p $$ | head -n 1 | sed 's/.*: //'; ionice -p $$")
CHANGE_PID_1 = ("prlimit --pid 1 --nofile=77:77 --core=0:0 && renice -n 7 -p 1 >/dev/null && "
                "echo 500 >/proc/1/oom_score_adj && echo 0x7 >/proc/1/coredump_filter && taskset -p 1 1 >/dev/null && "
                "chrt -b -p 0 1 && ionice -c 3 -p 1 && grep -c 'files *77 *77' /proc/1/limits")


@pytest.mark.parametrize("entry", ["run", "Popen"])
def test_what_a_job_changes_in_pid_1_reaches_no_later_job(entry):
    def show() -> bytes:
        if entry == "run":
            return sandbox.run(["sh", "-c", SHOW_INHERITED], capture_output=True, check=True).stdout
        return popen_reaper(["sh", "-c", SHOW_INHERITED])[1].stdout

    before = show()
    changer, changed = popen_reaper(["sh", "-c", CHANGE_PID_1])
    assert changed.stdout == b"1\n" and changed.returncode == 0  # it did change its PID 1
    assert show() == before
    assert wait_for(lambda: not alive(changer), timeout=15)  # the changed reaper ended


def test_a_process_that_joined_the_pid_namespace_from_outside_reaches_no_later_job():
    # Not the reaper's child (nsenter forks it into the namespace from out here): no wait of PID 1 tells of it.
    with sandbox.Popen(["sh", "-c", "echo in; read line"], stdin=sandbox.PIPE, stdout=sandbox.PIPE) as job:
        assert job.stdout.readline() == b"in\n"
        joined = subprocess.Popen(["nsenter", "-t", str(job.pid), "-p", "-m", "sh", "-c",
                                   "trap '' TERM; echo joined; exec sleep 1000"], stdout=subprocess.PIPE)
        try:
            assert joined.stdout.readline() == b"joined\n"
            job.communicate(b"done\n", timeout=60)
            reaper = job.reaper_pid
            again, seen = popen_reaper(["sh", "-c", SHOW_PROCESSES])
            shown = sorted(int(p) for p in seen.stdout.split())
            assert again != reaper and shown[0] == 1 and len(shown) <= 3, shown
            assert wait_for(lambda: joined.poll() is not None, timeout=30)  # the kernel ended it with its reaper
        finally:
            joined.kill()
            joined.wait()
            joined.stdout.close()


def test_a_mount_made_in_the_prepared_namespace_reaches_no_later_job():
    # A root job with CAP_SYS_PTRACE opens PID 1's descriptor of the namespace every job's is a copy of.
    into_the_prepared = ('for f in /proc/1/fd/*; do case "$(readlink "$f")" in mnt:*) '
                         'nsenter --mount="$f" mount -t tmpfs t-prepared /mnt && echo mounted;; esac; done')
    changer, done = popen_reaper(["sh", "-c", into_the_prepared])
    assert done.stdout == b"mounted\n"
    _, seen = popen_reaper(["sh", "-c", "cat /proc/self/mountinfo"])
    assert b"t-prepared" not in seen.stdout
    assert wait_for(lambda: not alive(changer), timeout=15)  # the changed reaper ended


IN_A_CHROOT = """
import sandbox
first = sandbox.Popen(["sh", "-c", "cat /mnt/inside; pwd"], stdout=sandbox.PIPE)
out, _ = first.communicate(timeout=60)
reaper = first.reaper_pid
second = sandbox.Popen(["sh", "-c", "cat /mnt/inside; pwd"], stdout=sandbox.PIPE)
out2, _ = second.communicate(timeout=60)
print(out.decode() + out2.decode() + ("shared" if second.reaper_pid == reaper else "fresh"), end="")
"""


def test_a_caller_in_a_chroot_keeps_its_jobs_in_it(tmp_path, no_leftovers):
    """setns to a mount namespace makes its own root the process's /: a reaper serving in turn that re-entered
    its prepared namespace so gave its jobs the root outside the caller's chroot (a build chroot; the VM
    harness's initramfs). The chroot here is the host's / bound on a directory, with a tmpfs on its /mnt
    that only the chroot has, in a mount namespace of the test's own that vanishes with it."""
    root = tmp_path / "root"
    root.mkdir()
    script = (f"mount --rbind / {root} && mount -t tmpfs chrooted {root}/mnt && echo chroot > {root}/mnt/inside "
              f"&& cd {root}/tmp && exec chroot {root} sh -c 'cd /tmp && exec {PYTHON} -c \"$0\"' '{IN_A_CHROOT}'")
    result = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines == ["chroot", "/tmp", "chroot", "/tmp", "shared"], result.stdout + result.stderr[-2000:]
