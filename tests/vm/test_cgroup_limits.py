"""cgroup v2 limits, in the throwaway VM, both ways a sandbox gets its cgroup: with systemd as
PID 1 (a transient scope; vm/suite's systemd boot) and with a plain init (a directory of ours in the
cgroup v2 hierarchy; the plain boot, whose busybox /init mounts no cgroup file system, so the fixture
mounts cgroup2 as a non-systemd init such as OpenRC does).

The limits hold (memory.max stops an allocating job and says it ran out of memory, pids.max stops a fork
loop, cpu.max slows a CPU-bound job against an unlimited run of the same), the reaper and the job share
the one cgroup, its figures reach the usage report, and the cgroup is gone after every ending, SIGKILL
of everything of ours included (then the next sandbox removes what nobody could, or systemd does).
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

import sandbox
from sandboxed_run_helpers.shared import cgroups
from support import CLI, PYTHON, children, launched, read_status, stays, wait_for

pytestmark = [pytest.mark.vm]

SLOW = 120  # everything is slow under emulation: waits only bound a failure
BASE = Path(cgroups.ROOT) / cgroups.DIRECT_BASE

# Writes its cgroup (as a path under /sys/fs/cgroup) to $1, then does the rest of its arguments.
WHERE = 'cut -d: -f3 /proc/self/cgroup > "$1.tmp" && mv "$1.tmp" "$1"; shift; exec "$@"'


@pytest.fixture(scope="module", params=[pytest.param("plain", id="plain-init"),
                                        pytest.param("systemd", id="systemd", marks=pytest.mark.systemd)])
def host(request):
    """The kind of machine this boot is; in the plain boot, cgroup2 mounted on /sys/fs/cgroup for the module."""
    if (request.param == "systemd") != cgroups.systemd_booted():
        pytest.skip(f"this boot is not the {request.param} one")
    mounted_here = False
    if request.param == "plain" and cgroups.mounted(cgroups.ROOT) != "cgroup2":
        subprocess.run(["mount", "-t", "cgroup2", "cgroup2", cgroups.ROOT], check=True)
        mounted_here = True
    try:
        yield request.param
    finally:
        if mounted_here:
            if BASE.exists():
                BASE.rmdir()  # empty, or a test failed to see a cgroup removed
            subprocess.run(["umount", cgroups.ROOT], check=True)


def sandbox_cgroups(host: str) -> set[str]:
    """The cgroups sandboxes have now (paths under /sys/fs/cgroup)."""
    if host == "plain":
        return {f"{cgroups.DIRECT_BASE}/{p.name}" for p in BASE.iterdir() if p.is_dir()} if BASE.exists() else set()
    slice_ = Path(cgroups.ROOT) / "system.slice"
    return {f"system.slice/{p.name}" for p in slice_.glob("sandboxed-run-*.scope")}


def gone(path: str) -> bool:
    return not (Path(cgroups.ROOT) / path).exists()


def read_where(where: Path) -> str:
    assert wait_for(where.exists, timeout=SLOW), "the job never started"
    return where.read_text().strip().strip("/")


@pytest.fixture(autouse=True)
def no_cgroup_left(host):
    before = sandbox_cgroups(host)
    yield
    assert wait_for(lambda: sandbox_cgroups(host) <= before, timeout=SLOW), sandbox_cgroups(host) - before


# -- the limits --------------------------------------------------------------------------------------------

LIMITS = ["--memory-max", "200M", "--memory-high", "150M", "--cpu-weight", "50", "--cpu-max", "80%",
          "--io-weight", "30", "--pids-max", "40"]
EXPECTED = {"memory.max": str(200 << 20), "memory.high": str(150 << 20), "cpu.weight": "50",
            "cpu.max": "80000 100000", "io.weight": "default 30", "pids.max": "40"}


@pytest.mark.parametrize("userns", [False, True], ids=["root", "userns"])
def test_the_whole_sandbox_is_in_one_cgroup_of_its_own_with_the_limits(host, userns, tmp_path, no_leftovers):
    if userns and subprocess.run(["unshare", "--user", "true"], capture_output=True).returncode:
        pytest.skip("no user namespace here (the plain boot runs its command chrooted, which the kernel refuses)")
    where = tmp_path / "where"
    argv = [CLI, *(["--userns"] if userns else []), *LIMITS, "--", "sh", "-c", WHERE, "sh", str(where), "sleep", "60"]
    with launched(argv) as launcher:
        path = read_where(where)
        assert path in sandbox_cgroups(host), path
        directory = Path(cgroups.ROOT) / path
        assert {name: (directory / name).read_text().strip() for name in EXPECTED} == EXPECTED
        # The reaper and the job (and the user namespace's parent, which forked the reaper into it) are in it;
        # the launcher is not.
        ours = [children(launcher.pid)[0]]
        if userns:
            ours.append(children(ours[0])[0])
        job = children(ours[-1])[0]
        assert wait_for(lambda: Path(f"/proc/{job}/cmdline").read_bytes().startswith(b"sleep"))

        def members() -> set[int]:
            return {int(p) for p in (directory / "cgroup.procs").read_text().split()}

        assert wait_for(lambda: members() == {*ours, job}), (members(), ours, job)  # sh's children may be exiting
        assert cgroups.own(launcher.pid) != path
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=SLOW) == -signal.SIGTERM
    assert wait_for(lambda: gone(path), timeout=SLOW)


def test_a_job_of_the_api_and_its_commands_share_its_cgroup(host, no_leftovers):
    with sandbox.Job(memory_max="300M", pids_max=50) as job:
        first = job.run(["cat", "/proc/self/cgroup"], capture_output=True, text=True).stdout
        second = job.run(["sh", "-c", "cat /proc/self/cgroup"], capture_output=True, text=True).stdout
        path = first.split("::")[1].strip().strip("/")
        assert first == second and path in sandbox_cgroups(host)
        assert (Path(cgroups.ROOT) / path / "memory.max").read_text().strip() == str(300 << 20)
    assert job.usage.memory_peak is not None and job.usage.pids_peak >= 2
    assert wait_for(lambda: gone(path), timeout=SLOW)


# Allocates and touches memory in 8 MiB steps, saying how far it got, until it is killed.
ALLOCATE = """
import sys
chunks = []
for step in range(1, 200):
    chunks.append(bytearray(8 << 20))
    print(step * 8, flush=True)
print("never killed", flush=True)
"""


def test_memory_max_stops_an_allocating_job_and_says_out_of_memory(host, tmp_path, no_leftovers):
    status = tmp_path / "status.jsonl"
    # The main process is killed; a process it left behind is then stopped, for that reason.
    job = ["sh", "-c", 'sleep 100 & exec "$@"', "sh", PYTHON, "-c", ALLOCATE]
    result = subprocess.run([CLI, "--memory-max", "96M", "--grace", "1", "--json-status", str(status), "--", *job],
                            capture_output=True, text=True, timeout=SLOW)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert "never killed" not in result.stdout and 8 <= int(result.stdout.split()[-1]) <= 96
    assert "sandboxed-run: the job ran out of memory: the kernel killed one of its processes" in result.stderr
    events = read_status(status)
    exited = [e for e in events if e["event"] == "exited"]
    assert exited[0]["signal"] == "SIGKILL" and exited[0]["reason"] == "out of memory"
    stopping = [e for e in events if e["event"] == "stopping"]
    assert stopping and stopping[0]["reason"] == "out of memory"
    usage = events[-1]["usage"]
    assert usage["oom_kills"] >= 1 and usage["memory_peak"] >= 64 << 20


def test_memory_max_through_the_api(host, capfd, no_leftovers):
    events: list = []
    result = sandbox.run([PYTHON, "-c", ALLOCATE], memory_max="96M", capture_output=True, text=True,
                         on_event=lambda name, fields: events.append((name, fields)))
    assert result.returncode == -signal.SIGKILL
    assert result.usage.oom_kills >= 1
    assert ("exited", "out of memory") in [(name, fields.get("reason")) for name, fields in events]
    assert "sandbox: the job ran out of memory" in capfd.readouterr().err  # the caller's stderr, not the job's


FORK_LOOP = """
import os, time
count = 0
try:
    while count < 10000:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        count += 1
except OSError as exc:
    print(count, exc.errno)
"""


def test_pids_max_stops_a_fork_loop(host, no_leftovers):
    result = subprocess.run([CLI, "--pids-max", "25", "--grace", "0", "--", PYTHON, "-c", FORK_LOOP],
                            capture_output=True, text=True, timeout=SLOW)
    assert result.returncode == 0, result.stderr
    forked, err = result.stdout.split()
    assert int(err) == 11 and int(forked) <= 23, result.stdout  # EAGAIN: 25 tasks with the reaper and the loop


# Spins for a few seconds of wall time; prints the CPU seconds it got.
SPIN = "import os, time\nend = time.monotonic() + 4\nwhile time.monotonic() < end: pass\nt = os.times()\n" \
       "print(t.user + t.system)"


def test_cpu_max_slows_a_cpu_bound_job(host, no_leftovers):
    """Measured against an unlimited run of the same job in the same test: a share, not a speed."""
    def cpu_seconds(*options: str) -> float:
        result = subprocess.run([CLI, *options, "--", PYTHON, "-c", SPIN], capture_output=True, text=True,
                                timeout=SLOW)
        assert result.returncode == 0, result.stderr
        return float(result.stdout)

    unlimited = cpu_seconds("--pids-max", "100")  # the same kind of sandbox, with a cgroup
    limited = cpu_seconds("--cpu-max", "20%")
    assert limited < unlimited * 0.5, (limited, unlimited)


def test_the_cgroup_figures_reach_the_usage(host, tmp_path, no_leftovers):
    """I/O through a loop device is charged to the sandbox's cgroup: io.stat's bytes come out as usage."""
    backing = tmp_path / "disk"
    script = (f'truncate -s 16M {backing}; dev=$(losetup -f --show {backing}) || exit 1; '
              'dd if=/dev/zero of="$dev" bs=1M count=8 oflag=direct status=none; '
              'dd if="$dev" of=/dev/null bs=1M count=8 iflag=direct status=none; losetup -d "$dev"; '
              'sleep 0.5 & sleep 0.5 & wait')
    result = sandbox.run(["sh", "-c", script], memory_max="500M")
    assert result.returncode == 0
    usage = result.usage
    assert usage.io_write >= 8 << 20 and usage.io_read >= 8 << 20, usage
    assert 4 <= usage.pids_peak < 20 and usage.memory_peak > 0 and usage.oom_kills == 0, usage


# -- gone in every ending ----------------------------------------------------------------------------------

API_CALLER = """
import sys, sandbox
sandbox.run(["sh", "-c", sys.argv[1], "sh", sys.argv[2], "sleep", "600"], memory_max="300M", grace=5)
"""


@pytest.mark.parametrize("ending", ["exit", "timeout", "launcher-sigkill", "all-sigkill", "api-caller-sigkill"])
def test_the_cgroup_is_gone_in_every_ending(host, ending, tmp_path, no_leftovers):
    where = tmp_path / "where"
    job = ["sh", "-c", WHERE, "sh", str(where)]
    limits = ["--memory-max", "300M", "--grace", "5"]
    if ending == "exit":
        assert subprocess.run([CLI, *limits, "--", *job, "true"], timeout=SLOW).returncode == 0
        path = read_where(where)
    elif ending == "timeout":
        result = subprocess.run([CLI, *limits, "--timeout", "3", "--", *job, "sleep", "600"], timeout=SLOW)
        assert result.returncode == 124
        path = read_where(where)
    elif ending == "api-caller-sigkill":
        with launched([PYTHON, "-c", API_CALLER, WHERE, str(where)]) as caller:
            path = read_where(where)
            caller.kill()
    else:
        with launched([CLI, *limits, "--", *job, "sleep", "600"]) as launcher:
            path = read_where(where)
            if ending == "all-sigkill":
                os.kill(children(launcher.pid)[0], signal.SIGKILL)
            launcher.kill()
    if ending == "all-sigkill" and host == "plain":
        # Nothing of ours was left to remove it: it stays, empty, until the next sandbox with a cgroup.
        assert wait_for(lambda: not (Path(cgroups.ROOT) / path / "cgroup.procs").read_text().strip(), timeout=SLOW)
        assert stays(lambda: not gone(path), 0.5)
        assert subprocess.run([CLI, "--pids-max", "10", "--", "true"], timeout=SLOW).returncode == 0
    assert wait_for(lambda: gone(path), timeout=SLOW), f"{path} outlived its sandbox ({ending})"
