"""examples/systemd/: the backup timer's service runs examples/backup.sh under sandboxed-run, and inside the
sandbox the backup really has idle I/O priority, the lowest CPU priority, the memory limit (in a scope of its
own) and no capability but the two it needs; it then completes and says what it used in the journal.

Needs systemd as PID 1: runs in the throwaway VM booted with `vm/run --systemd` (vm/suite's second boot).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from sandboxed_run_helpers.shared import cgroups
from support import CLI, marked_processes, wait_for

pytestmark = [pytest.mark.vm, pytest.mark.systemd]

SLOW = 120
EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples"
UNITS = Path("/etc/systemd/system")
KEPT = 1 << 21 | 1 << 2 | 1 << 27 | 1 << 0  # CAP_SYS_ADMIN, CAP_DAC_READ_SEARCH, CAP_MKNOD, CAP_CHOWN


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=SLOW)


def status_of(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


@pytest.fixture
def units(tmp_path, no_leftovers):
    """The example's two units, installed under a name of their own with the program paths of this checkout,
    and a drop-in pointing the backup at a small test tree, slowed down so that it can be watched."""
    name = f"backup-{uuid.uuid4().hex[:8]}"
    source = tmp_path / "source"
    source.mkdir()
    for i in range(12):
        (source / f"file{i}").write_bytes(os.urandom(100_000))
    service = (EXAMPLES / "systemd" / "backup.service").read_text()
    service = service.replace("/usr/local/bin/sandboxed-run", CLI)
    service = service.replace("/usr/local/share/sandboxed-run/backup.sh", str(EXAMPLES / "backup.sh"))
    (UNITS / f"{name}.service").write_text(service)
    (UNITS / f"{name}.timer").write_text((EXAMPLES / "systemd" / "backup.timer").read_text())
    dropin = UNITS / f"{name}.service.d"
    dropin.mkdir()
    (dropin / "test.conf").write_text(
        f"[Service]\nEnvironment=BACKUP_SOURCE={source} BACKUP_IMAGE={tmp_path / 'backup.img'} BACKUP_KIND=plain "
        f"BACKUP_BWLIMIT=200 SANDBOXED_RUN_TEST={no_leftovers}\n")
    run("systemctl", "daemon-reload")
    try:
        yield name
    finally:
        run("systemctl", "stop", f"{name}.timer", f"{name}.service")
        for path in (dropin / "test.conf", UNITS / f"{name}.service", UNITS / f"{name}.timer"):
            path.unlink()
        dropin.rmdir()
        run("systemctl", "daemon-reload")
        run("systemctl", "reset-failed", f"{name}.service")


def test_the_timers_service_backs_up_within_its_limits(units, no_leftovers):
    name = units
    assert run("systemctl", "start", f"{name}.timer").returncode == 0
    assert run("systemctl", "show", "-P", "ActiveState", f"{name}.timer").stdout.strip() == "active"
    assert run("systemctl", "show", "-P", "Unit", f"{name}.timer").stdout.strip() == f"{name}.service"
    assert run("systemctl", "start", "--no-block", f"{name}.service").returncode == 0

    def rsync() -> list[int]:
        return [pid for pid in marked_processes(no_leftovers, {os.getpid()})
                if Path(f"/proc/{pid}/comm").read_text().strip() == "rsync"]

    assert wait_for(rsync, timeout=SLOW), run("journalctl", "-u", f"{name}.service", "-o", "cat").stdout
    pid = rsync()[0]
    ionice = run("ionice", "-p", str(pid)).stdout.strip()
    nice = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])
    path = cgroups.own(pid)
    status = status_of(pid)
    assert ionice == "idle"
    assert nice == 19
    assert path.startswith("system.slice/sandboxed-run-") and path.endswith(".scope"), path
    assert (Path(cgroups.ROOT) / path / "memory.max").read_text().strip() == str(1 << 30)
    assert status["NoNewPrivs"] == "1"
    assert int(status["CapBnd"], 16) == int(status["CapEff"], 16) == KEPT
    # The launcher stays in the service's own cgroup: systemctl stop reaches it, and it the job.
    launcher = [p for p in map(int, Path(f"/sys/fs/cgroup/system.slice/{name}.service/cgroup.procs").read_text()
                                .split()) if Path(f"/proc/{p}/comm").read_text().strip() == "sandboxed-run"]
    assert launcher, "the launcher is not in its service"

    assert wait_for(lambda: run("systemctl", "show", "-P", "ActiveState", f"{name}.service").stdout.strip()
                    == "inactive", timeout=SLOW)
    assert run("systemctl", "show", "-P", "Result", f"{name}.service").stdout.strip() == "success"
    # journald files each line under the unit of the process that wrote it: the job's under its scope.
    ours = run("journalctl", "-u", f"{name}.service", "-o", "cat").stdout
    both = run("journalctl", "-u", f"{name}.service", "-u", "sandboxed-run-*", "-o", "cat").stdout
    assert "sandboxed-run: finished status=0; used " in ours, ours
    assert "backup: copied 12 files" in both and "backup: unmounted /mnt/backup-target" in both, both
    assert wait_for(lambda: not (Path(cgroups.ROOT) / path).exists(), timeout=SLOW), "the scope outlived the backup"
