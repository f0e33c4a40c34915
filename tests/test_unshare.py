"""--unshare KIND[,KIND...] (unshare=): new IPC, UTS, cgroup and time namespaces for the job, checked from outside
(the inode of /proc/JOBPID/ns/KIND against ours) and by behaviour (a host System V message queue the job cannot
see, a hostname the job sets that the host keeps, a cgroup path of "/", clock offsets of 0), through every entry
point; made per request (never shared with the spawn server's ready reaper or another sandbox); in a user
namespace; joined by --enter; shown by --list; bad kinds refused."""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import uuid
from pathlib import Path

import pytest
from test_confinement import ENTRY_POINTS, through
from test_named import cli, unique_name, wait_listed

import sandbox
from support import CLI, launched

KINDS = ("ipc", "uts", "cgroup", "time")
SHOW = "for k in ipc uts cgroup time net; do echo $k $(stat -L -c %i /proc/self/ns/$k); done"


def ours(kind: str) -> int:
    return os.stat(f"/proc/self/ns/{kind}").st_ino


def namespaces_of(out: str) -> dict[str, int]:
    return {kind: int(inode) for kind, inode in (line.split() for line in out.splitlines())}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_the_job_gets_new_namespaces_of_the_kinds_asked_for(entry, no_leftovers):
    code, out, err = through(entry, ["sh", "-c", SHOW], {"unshare": ["ipc", "uts", "cgroup", "time"]})
    assert code == 0, err
    seen = namespaces_of(out)
    assert all(seen[kind] != ours(kind) for kind in KINDS), seen
    assert seen["net"] == ours("net")


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_alone_and_nothing_else(kind, no_leftovers):
    with sandbox.Popen(["sleep", "100"], unshare=[kind], grace=0) as process:
        # From outside: the job's namespaces as the kernel shows them to us.
        job = {k: os.stat(f"/proc/{process.pid}/ns/{k}").st_ino for k in (*KINDS, "net")}
        process.terminate()
    assert {k for k in job if job[k] != ours(k)} == {kind}


def test_without_the_option_the_job_keeps_ours(no_leftovers):
    code, out, err = through("run", ["sh", "-c", SHOW], {})
    assert code == 0, err
    assert namespaces_of(out) == {kind: ours(kind) for kind in (*KINDS, "net")}


def test_namespaces_are_made_per_sandbox_never_shared_through_the_ready_reaper(no_leftovers):
    # The spawn server forks the next reaper ahead of time: what one request made must not reach it. The first
    # sandbox lives on while the others run: the kernel reuses a freed namespace's inode number.
    with sandbox.Popen(["sh", "-c", SHOW + "; read done"], unshare=["ipc", "time"], stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE, text=True) as first:
        lines = [first.stdout.readline() for _ in range(5)]
        seen = [namespaces_of("".join(lines))]
        seen += [namespaces_of(sandbox.run(["sh", "-c", SHOW], unshare=u, capture_output=True, text=True).stdout)
                 for u in (["ipc", "time"], [])]
        first.communicate("done\n")
    assert seen[0]["ipc"] != seen[1]["ipc"] and seen[0]["time"] != seen[1]["time"]
    assert seen[2]["ipc"] == ours("ipc") and seen[2]["time"] == ours("time")


LIBC = ctypes.CDLL(None, use_errno=True)
IPC_PRIVATE, IPC_CREAT, IPC_RMID = 0, 0o1000, 0


@pytest.fixture
def host_queue():
    """A System V message queue of the host's (its id)."""
    qid = LIBC.msgget(IPC_PRIVATE, IPC_CREAT | 0o600)
    assert qid >= 0, os.strerror(ctypes.get_errno())
    try:
        yield qid
    finally:
        LIBC.msgctl(qid, IPC_RMID, None)


def test_a_host_message_queue_is_out_of_sight_with_ipc(host_queue, no_leftovers):
    # The ids of the queues the job's IPC namespace holds, as the kernel lists them to it.
    probe = "awk 'NR > 1 { print $2 }' /proc/sysvipc/msg"
    assert str(host_queue) in cli("--", "sh", "-c", probe).stdout.split()  # the probe can fail
    result = cli("--unshare", "ipc", "--", "sh", "-c", probe)
    assert (result.returncode, result.stdout) == (0, ""), result.stderr


def test_a_hostname_set_inside_stays_inside_with_uts(no_leftovers):
    before = socket.gethostname()
    result = cli("--unshare", "uts", "--", "sh", "-c", "hostname sbx-inside && hostname")
    assert (result.returncode, result.stdout) == (0, "sbx-inside\n"), result.stderr
    assert socket.gethostname() == before


def test_hostname_implies_a_uts_namespace(no_leftovers):
    result = cli("--hostname", "sbx-named", "--", "sh", "-c", SHOW)
    assert namespaces_of(result.stdout)["uts"] != ours("uts")
    both = cli("--hostname", "sbx-named", "--unshare", "uts", "--", "hostname")
    assert both.stdout == "sbx-named\n", both.stderr


@pytest.fixture
def pids_cgroup():
    """A cgroup of the v1 pids hierarchy of ours, removed afterwards."""
    path = Path("/sys/fs/cgroup/pids") / f"sbx-{uuid.uuid4().hex[:8]}"
    if not path.parent.is_dir():
        pytest.skip("no cgroup v1 pids hierarchy")
    path.mkdir()
    try:
        yield path
    finally:
        path.rmdir()


def test_the_jobs_cgroup_is_its_root_with_cgroup(pids_cgroup, no_leftovers):
    def pids_line(*flags: str) -> str:
        script = f'echo $$ > {pids_cgroup}/cgroup.procs && exec "$@"'
        result = subprocess.run(["sh", "-c", script, "sh", CLI, *flags, "--", "cat", "/proc/self/cgroup"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return next(line for line in result.stdout.splitlines() if ":pids:" in line)

    assert pids_line().endswith(f":pids:/{pids_cgroup.name}")
    assert pids_line("--unshare", "cgroup").endswith(":pids:/")


def test_a_time_namespace_holds_every_command_of_a_job(no_leftovers):
    with sandbox.Job(unshare=["time"]) as job:
        first, second = (job.run(["sh", "-c", "stat -L -c %i /proc/self/ns/time; cat /proc/self/timens_offsets"],
                                 capture_output=True, text=True).stdout.split("\n", 1) for _ in range(2))
        assert first == second and int(first[0]) != ours("time")
        assert os.stat(job.namespace_path("time")).st_ino == int(first[0])
        assert [line.split()[1:] for line in first[1].splitlines()] == [["0", "0"], ["0", "0"]]


def test_in_a_user_namespace(no_leftovers):
    result = cli("--userns", "--unshare", "ipc,uts,cgroup,time", "--", "sh", "-c", SHOW)
    assert result.returncode == 0, result.stderr
    seen = namespaces_of(result.stdout)
    assert all(seen[kind] != ours(kind) for kind in KINDS), seen


def test_enter_joins_them_and_list_shows_them(no_leftovers):
    name = unique_name()
    with launched([CLI, "--name", name, "--unshare", "ipc,time", "--unshare", "uts,cgroup", "--", "sleep", "1000"]):
        job_pid = wait_listed(name)["job_pid"]
        job = {kind: os.stat(f"/proc/{job_pid}/ns/{kind}").st_ino for kind in (*KINDS, "net")}
        entered = cli("--enter", name, "--", "sh", "-c", SHOW)
        assert entered.returncode == 0, entered.stderr
        listed = cli("--list")
        assert "--unshare ipc --unshare uts --unshare cgroup --unshare time" in listed.stdout, listed.stdout
        assert "/sys/fs/cgroup" not in listed.stdout  # a cgroup mount seen from a cgroup namespace is the host's
        assert cli("--stop", name).returncode == 0
    assert namespaces_of(entered.stdout) == job
    assert all(job[kind] != ours(kind) for kind in KINDS), job


@pytest.mark.parametrize("value", ["bogus", "ipc,net", "ipc,,uts", "user"])
def test_a_bad_kind_is_a_usage_error_naming_it(value):
    result = cli("--unshare", value, "--", "true")
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and "--unshare: unknown namespace kind" in result.stderr
    with pytest.raises(ValueError, match="unshare: unknown namespace kind"):
        sandbox.run(["true"], unshare=[value])
    with pytest.raises(ValueError, match="takes a list"):
        sandbox.run(["true"], unshare="ipc")
    with pytest.raises(TypeError, match="namespace kinds"):
        sandbox.run(["true"], unshare=[1])
