"""sandboxed-run --enter NAME [-- COMMAND]: the command runs in the sandbox's namespaces with the job's
root, directory and marks, sees its mounts, exits as a shell expects, is one of the sandbox's processes
(its stop reaches it, its end ends it) and never keeps the sandbox's namespaces alive."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_named import cli, listed, ns_holders, unique_name, wait_listed

from sandboxed_run_helpers.reaper.main import REAP_AFTER_KILL
from support import (
    CLI,
    PYTHON,
    Terminal,
    children,
    cli_words,
    cmdline,
    full_pipe,
    launched,
    log_lines,
    read_status,
    signal_job,
    signal_of,
    suspend_and_resume,
    wait_for,
)

LINKS = "import socket; print(' '.join(name for _, name in socket.if_nameindex()))"


def inside_ns(pid: int, kind: str = "mnt") -> int:
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino


def test_the_entered_command_sees_the_jobs_mounts_directory_processes_and_marks(tmp_path, no_leftovers):
    name = unique_name()
    script = "echo from-the-job > /mnt/f && cd /mnt && exec sleep 1000"
    with launched([CLI, "--name", name, "--tmpfs", "/mnt", "--", "sh", "-c", script]):
        shown = wait_listed(name)
        assert wait_for(lambda: listed()[name]["cwd"] == "/mnt")
        job = shown["job_pid"]
        probe = ("cat f; pwd; cat /proc/1/comm; echo $SANDBOXED_RUN $SANDBOXED_RUN_MNT_NS; "
                 "stat -L -c %i /proc/self/ns/mnt /proc/self/ns/pid; ps -o comm= -p 2; "
                 f"{PYTHON} -c 'from sandboxed_run_helpers.shared import marks; marks.check(); print(\"inside\")'; "
                 "command -v sandbox-mount-image")
        result = cli("--enter", name, "--", "sh", "-c", probe)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [
            "from-the-job", "/mnt", "sandbox-reaper", f"1 {inside_ns(job)}", str(inside_ns(job)),
            str(inside_ns(job, "pid")), "sleep", "inside", str(Path(PYTHON).parent / "sandbox-mount-image")]
        assert not (Path("/mnt") / "f").exists()  # the host never sees it
        # --cwd and --setenv for the entered command.
        result = cli("--enter", name, "--cwd", "/", "--setenv", "GREETING=hi", "--", "sh", "-c", 'pwd; echo $GREETING')
        assert result.stdout == "/\nhi\n", result.stderr
        assert cli("--stop", name).returncode == 0


def test_the_entered_command_gets_the_jobs_root_when_the_sandbox_was_started_in_a_chroot(tmp_path, no_leftovers):
    """setns into a mount namespace gives its root, where the job's (a launcher in a chroot) may be another: the
    reaper sends its own. Here the chroot is a copy of the whole tree (a recursive bind, in a mount namespace of
    the test's), so everything runs there; only the sandbox's fresh /proc, mounted in the chroot, tells them
    apart."""
    name, root = unique_name(), tmp_path / "root"
    root.mkdir()
    started = f'mount --rbind / {root} && mount --make-rslave {root} && exec chroot {root} "$@"'
    with launched(["unshare", "-m", "--propagation", "private", "sh", "-c", started, "sh",
                   CLI, "--name", name, "--", "sleep", "1000"]):
        wait_listed(name)
        result = cli("--enter", name, "--", "cat", "/proc/1/comm")
        assert (result.returncode, result.stdout) == (0, "sandbox-reaper\n"), result.stderr
        assert cli("--stop", name).returncode == 0


def test_the_entered_command_joins_the_network_and_uts_namespaces(no_leftovers):
    name = unique_name()
    with launched([CLI, "--name", name, "--net", "none", "--hostname", "boxy", "--", "sleep", "1000"]):
        wait_listed(name)
        result = cli("--enter", name, "--", "sh", "-c", f"hostname; {PYTHON} -c \"{LINKS}\"")
        assert result.stdout.splitlines() == ["boxy", "lo"], result.stderr
        assert cli("--stop", name).returncode == 0


def test_the_entered_command_gets_an_empty_environment_with_clearenv(no_leftovers):
    name = unique_name()
    with launched([CLI, "--name", name, "--", "sleep", "1000"]):
        wait_listed(name)
        result = cli("--enter", name, "--clearenv", "--setenv", "A=1", "--", "env", "-0")
        assert cli("--stop", name).returncode == 0
    names = sorted(pair.split("=", 1)[0] for pair in result.stdout.split("\0")[:-1])
    assert names == ["A", "PATH", "SANDBOXED_RUN", "SANDBOXED_RUN_BIN", "SANDBOXED_RUN_MNT_NS"], result.stderr


def test_the_exit_status_is_the_entered_commands(tmp_path, no_leftovers):
    name = unique_name()
    with launched([CLI, "--name", name, "--", "sleep", "1000"]):
        wait_listed(name)
        assert cli("--enter", name, "--", "sh", "-c", "exit 7").returncode == 7
        assert cli("--enter", name, "--", "sh", "-c", "kill -TERM $$").returncode == -signal.SIGTERM
        result = cli("--enter", name, "--", "no-such-command-xyz")
        assert result.returncode == 127 and "no-such-command-xyz: command not found" in result.stderr
        result = cli("--enter", name, "--", str(tmp_path))
        assert result.returncode == 126, result.stderr
        result = cli("--enter", name, "--cwd", "/no/such/dir", "--", "true")
        assert result.returncode == 125 and "/no/such/dir" in result.stderr
        # No command: the user's shell ($SHELL, or /bin/sh if that is not in there), reading our stdin.
        for shell in ("/bin/sh", "/no/such/shell"):
            result = subprocess.run([CLI, "--enter", name], input="echo $SANDBOXED_RUN; exit 3", text=True,
                                    capture_output=True, env={**os.environ, "SHELL": shell}, timeout=60)
            assert (result.returncode, result.stdout) == (3, "1\n"), result.stderr
        assert cli("--stop", name).returncode == 0


@pytest.mark.root("looks into the reaper's /proc/PID, which only root may read: it is not dumpable")
def test_the_entered_process_ends_with_the_sandbox_and_holds_nothing_alive(tmp_path, no_leftovers):
    name = unique_name()
    with launched([CLI, "--name", name, "--grace", "5", "--json-status", str(tmp_path / "s"), "--",
                   "sleep", "1000"]) as launcher:
        shown = wait_listed(name)
        mnt_ns = inside_ns(shown["job_pid"])
        # One that ends on the stop signal, and one that ignores it and is SIGKILLed when the grace is over.
        plain = subprocess.Popen([CLI, "--enter", name, "--", "sleep", "1000"])
        loop = "trap '' TERM; while :; do sleep 0.1; done"
        stubborn = subprocess.Popen([CLI, "--enter", name, "--", "sh", "-c", loop])
        try:
            def inside() -> list[str]:
                return [cmdline(pid) for pid in ns_holders(mnt_ns)]

            # The shell by its own command line: before its exec it shows ours, which names the trap too.
            assert wait_for(lambda: inside().count("sleep 1000") == 2 and f"sh -c {loop}" in inside())
            # Only the reaper, the job and the entered commands are in there: not we, nor our forker.
            assert {c for c in inside() if c != "sleep 0.1"} == {"sandbox-reaper", "sleep 1000", f"sh -c {loop}"}
            assert cli("--stop", name).returncode == 0
            assert ns_holders(mnt_ns) == []  # all gone when --stop returned: nothing keeps the namespace
            assert plain.wait(timeout=30) == -signal.SIGTERM
            assert stubborn.wait(timeout=30) == -signal.SIGKILL
        finally:
            for enterer in (plain, stubborn):
                if enterer.poll() is None:
                    enterer.kill()
                enterer.wait()
        assert launcher.wait(timeout=30) == -signal.SIGTERM
    killed = [e for e in read_status(tmp_path / "s") if e["event"] == "killed"]
    assert killed and killed[0]["count"] >= 1 and killed[0]["reason"] == "grace period over"


@pytest.mark.root("looks into the reaper's /proc/PID, which only root may read: it is not dumpable")
def test_a_stop_ends_as_soon_as_a_killed_entered_process_is_gone(no_leftovers):
    """The entered process is not the reaper's child (no SIGCHLD tells it of its end): once SIGKILLed it is
    watched through its pidfd, not waited out for the reaper's longest wait after a SIGKILL."""
    name = unique_name()
    with launched([CLI, "--name", name, "--", "sleep", "1000"]) as launcher:
        shown = wait_listed(name)
        mnt_ns = inside_ns(shown["job_pid"])
        with launched([CLI, "--enter", name, "--", "sh", "-c", "trap '' TERM; exec sleep 1000"]) as enterer:
            assert wait_for(lambda: len(ns_holders(mnt_ns)) == 3)  # the reaper, the job, the entered sleep
            began = time.monotonic()
            # The job ends on the stop signal; the entered command is SIGKILLed, alone, after the grace.
            assert cli("--stop", name, "--grace", "0.5").returncode == 0
            assert time.monotonic() - began < REAP_AFTER_KILL
            assert ns_holders(mnt_ns) == []
            assert enterer.wait(timeout=30) == -signal.SIGKILL
        assert launcher.wait(timeout=30) == -signal.SIGTERM


def test_an_entered_process_gets_the_stop_when_the_main_process_exits(tmp_path, no_leftovers):
    """The same stop as for any process the job left: the stop signal, then the grace period."""
    name = unique_name()
    flag = tmp_path / "go"
    argv, log = signal_job(tmp_path, cleanup=0.5)
    script = f"while [ ! -e {flag} ]; do sleep 0.05; done; exit 4"
    with launched([CLI, "--name", name, "--", "sh", "-c", script]) as launcher:
        wait_listed(name)
        with launched([CLI, "--enter", name, "--", *argv]) as enterer:
            assert wait_for(lambda: log_lines(log))
            flag.touch()
            assert launcher.wait(timeout=30) == 4
            assert log_lines(log)[1:] == ["SIGTERM", "cleaned"]  # within the grace, before the launcher ended
            assert enterer.wait(timeout=30) == -signal.SIGTERM


def test_a_stopping_sandbox_cannot_be_entered(tmp_path, no_leftovers):
    name = unique_name()
    argv, log = signal_job(tmp_path, cleanup=600.0)
    with launched([CLI, "--name", name, "--grace", "600", "--", *argv]):
        assert wait_for(lambda: log_lines(log))
        with launched([CLI, "--stop", name]) as stopper:
            wait_listed(name, "stopping")
            result = cli("--enter", name, "--", "true")
            assert result.returncode == 125 and "is stopping (requested)" in result.stderr
            assert cli("--stop", name, "--grace", "0").returncode == 0
            assert stopper.wait(timeout=30) == 0


def test_ctrl_c_reaches_the_entered_command_once(tmp_path, no_leftovers):
    """At a terminal the entered command gets the foreground, as a shell's job would: the terminal's
    Ctrl+C reaches it (once), and --enter then dies of the same signal."""
    name = unique_name()
    argv, log = signal_job(tmp_path, cleanup=0.3)
    with launched([CLI, "--name", name, "--", "sleep", "1000"]):
        wait_listed(name)
        term = Terminal([CLI, "--enter", name, "--", *argv], tmp_path)
        try:
            assert wait_for(lambda: log_lines(log)), term.output
            term.ctrl_c()
            status = term.wait()
        finally:
            term.close()
        assert log_lines(log)[1:] == ["SIGINT", "cleaned"]
        assert signal_of(status) == signal.SIGINT
        assert listed()[name]["state"] == "running"  # the sandbox itself goes on
        assert cli("--stop", name).returncode == 0


def test_a_signal_to_the_enterer_is_passed_on_once(tmp_path, no_leftovers):
    name = unique_name()
    argv, log = signal_job(tmp_path, cleanup=0.2)
    with launched([CLI, "--name", name, "--", "sleep", "1000"]):
        wait_listed(name)
        with launched([CLI, "--enter", name, "--", *argv], start_new_session=True) as enterer:
            assert wait_for(lambda: log_lines(log))
            os.killpg(enterer.pid, signal.SIGUSR1)  # its whole group: the command is in a group of its own
            assert enterer.wait(timeout=30) == -signal.SIGUSR1
        assert log_lines(log)[1:] == ["SIGUSR1", "cleaned"]
        assert cli("--stop", name).returncode == 0


def test_the_entered_command_has_the_terminal_and_ctrl_z_suspends_it_until_fg(tmp_path, no_leftovers):
    name = unique_name()
    counter = tmp_path / "count"
    job = (f'read -r -p "word: " w; echo got $w; i=0; while [ $i -lt 300 ]; do i=$((i+1)); echo $i > {counter}; '
           "sleep 0.02; done; echo finished")
    with launched([CLI, "--name", name, "--", "sleep", "1000"]):
        wait_listed(name)
        env = dict(os.environ, PS1="$ ", TERM="dumb")
        term = Terminal(["bash", "--norc", "--noprofile", "-i"], tmp_path, env)
        try:
            assert term.expect(b"$ ")
            term.type(f"{CLI} --enter {name} -- bash -c '{job}'\n".encode())
            assert term.expect(b"word: "), term.output
            term.type(b"typed\n")
            assert term.expect(b"got typed"), term.output
            suspend_and_resume(term, counter)
            term.type(b"echo status=$?\n")
            assert term.expect(b"status=0"), term.output
            term.type(b"exit\n")
            term.wait()
        finally:
            term.close()
        assert cli("--stop", name).returncode == 0


def test_an_entered_command_that_cannot_start_is_not_deaf_to_a_stalled_stderr(no_leftovers):
    """Its one line waits for a reader who has stopped reading; a signal passed on still ends it (the
    command's process had our signals blocked while it wrote, so it heard nothing and --enter waited)."""
    name = unique_name()
    r, w = full_pipe()
    try:
        with launched([CLI, "--name", name, "--", "sleep", "1000"]):
            wait_listed(name)
            with launched([CLI, "--enter", name, "--", "no-such-command-xyz"], stderr=w) as enterer:
                assert wait_for(lambda: children(enterer.pid))
                enterer.send_signal(signal.SIGTERM)
                assert enterer.wait(timeout=30) == -signal.SIGTERM
            assert cli("--stop", name).returncode == 0
    finally:
        os.close(w)
        os.close(r)


# The sandbox's own confinement of its processes: the entered command must get it too.
CONFINING = {"nice": 5, "ionice": "idle", "rlimit": ["NOFILE=100:200", "CORE=0"], "umask": 0o027,
             "no_new_privs": True, "cap_drop": ["CAP_SYS_ADMIN", "net_raw"]}
SYS_ADMIN, NET_RAW = 21, 13
STARTS = {
    "cli": None,
    "cli --userns": None,
    "Popen": "with sandbox.Popen(['sleep', '1000'], name=NAME, **OPTIONS) as p:\n    p.wait()",
    "Job": "with sandbox.Job(name=NAME, **OPTIONS) as job:\n    job.run(['sleep', '1000'])",
}


def confinement(pid: int) -> dict[str, str]:
    """What the kernel says of a process's confinement, read from outside."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    seen = {key: status[key].strip() for key in ("Umask", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
                                                 "NoNewPrivs")}
    seen["Nice"] = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16]
    limits = Path(f"/proc/{pid}/limits").read_text()
    for label in ("Max open files", "Max core file size"):
        seen[label] = " ".join(limits.split(label)[1].split()[:2])
    seen["IO"] = subprocess.run(["ionice", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
    return seen


@pytest.mark.root("looks into the reaper's /proc/PID, which only root may read: it is not dumpable")
@pytest.mark.parametrize("start", STARTS)
def test_the_entered_command_is_confined_as_the_job_is(start, no_leftovers):
    """--enter gives the command what the sandbox gave the job's first process: its capabilities (bounding set
    included), no_new_privs, limits, niceness, I/O class and umask, so root cannot step out of the sandbox's
    confinement through it. Read from outside, for a sandbox of the command (with a user namespace too) and of
    the API (a Popen's, a Job's)."""
    name = unique_name()
    if STARTS[start] is None:
        argv = [CLI, "--name", name, *(["--userns"] if "userns" in start else []), *cli_words(CONFINING), "--",
                "sleep", "1000"]
    else:
        argv = [PYTHON, "-c", f"import sandbox\nNAME, OPTIONS = {name!r}, {CONFINING!r}\n{STARTS[start]}"]
    with launched(argv):
        mnt_ns = inside_ns(wait_listed(name)["reaper_pid"])

        def running(command: str) -> list[int]:
            return [pid for pid in ns_holders(mnt_ns) if cmdline(pid) == command]

        assert wait_for(lambda: running("sleep 1000"))
        with launched([CLI, "--enter", name, "--", "sleep", "1001"]) as enterer:
            assert wait_for(lambda: running("sleep 1001"))
            job, entered = (confinement(running(command)[0]) for command in ("sleep 1000", "sleep 1001"))
            assert entered == job
            assert (job["NoNewPrivs"], job["Nice"], job["Umask"], job["IO"]) == ("1", "5", "0027", "idle")
            assert (job["Max open files"], job["Max core file size"]) == ("100 200", "0 0")
            for kind in ("CapBnd", "CapPrm", "CapEff"):
                assert not int(job[kind], 16) & (1 << SYS_ADMIN | 1 << NET_RAW) and int(job[kind], 16), job
            assert cli("--stop", name).returncode == 0
            assert enterer.wait(timeout=30) == -signal.SIGTERM
