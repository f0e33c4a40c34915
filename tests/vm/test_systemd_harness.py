"""The VM booted with `vm/run --systemd` (vm/suite's second boot) is a real systemd system.

systemd is PID 1 on the cgroup v2 unified hierarchy with the memory and pids controllers (also delegated
to a unit that asks for them), `systemd-run` starts transient units that `systemctl` shows and stops, and
the project's own `sandboxed-run` works inside a unit: its namespaces, reaper and spawn path under systemd.

Runs only with SANDBOXED_RUN_VM=systemd (see tests/conftest.py).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from support import CLI, wait_for

pytestmark = [pytest.mark.vm, pytest.mark.systemd]

SLOW = 120  # everything is slow under emulation: limits only bound a failure


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=SLOW)


def unit_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def show(unit: str, prop: str) -> str:
    return run("systemctl", "show", "-P", prop, unit).stdout.strip()


def mount_fstype(target: str) -> str | None:
    """The file system type of what is mounted on target (the topmost mount, if several)."""
    fstype = None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == target:
            fstype = fields[fields.index("-") + 1]
    return fstype


def test_pid1_is_systemd():
    assert Path("/proc/1/comm").read_text().strip() == "systemd"
    assert os.path.basename(os.readlink("/proc/1/exe")) == "systemd"
    assert run("systemctl", "is-system-running").stdout.strip() == "running"


def test_cgroup2_with_memory_and_pids():
    assert mount_fstype("/sys/fs/cgroup") == "cgroup2"
    controllers = Path("/sys/fs/cgroup/cgroup.controllers").read_text().split()
    assert {"memory", "pids", "cpu", "io"} <= set(controllers)


def test_controllers_are_delegated_to_a_unit():
    script = 'cat "/sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)/cgroup.controllers"'
    result = run("systemd-run", "--quiet", "--wait", "--pipe", "-p", "Delegate=yes", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    assert {"memory", "pids"} <= set(result.stdout.split())


def test_systemd_run_wait():
    unit = unit_name("harness-x")
    result = run("systemd-run", f"--unit={unit}", "--wait", "true")
    assert result.returncode == 0, result.stderr
    assert "Finished with result: success" in result.stderr


def test_systemctl_stops_a_transient_unit():
    unit = unit_name("harness-y")
    result = run("systemd-run", f"--unit={unit}", "-p", "KillMode=mixed", "sleep", "100")
    assert result.returncode == 0, result.stderr
    try:
        assert wait_for(lambda: show(unit, "ActiveState") == "active", timeout=SLOW)
        assert show(unit, "KillMode") == "mixed"
        pid = int(show(unit, "MainPID"))
        assert Path(f"/proc/{pid}/comm").read_text().strip() == "sleep"
        assert run("systemctl", "stop", unit).returncode == 0
        assert show(unit, "ActiveState") == "inactive"
        assert wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=SLOW)
    finally:
        run("systemctl", "stop", unit)


def test_sandboxed_run_in_a_unit():
    """The launcher of this checkout (next to the interpreter running the tests, not a fixed path)."""
    result = run("systemd-run", "--quiet", "--wait", "--pipe", CLI, "--", "true")
    assert result.returncode == 0, result.stderr
    result = run("systemd-run", "--quiet", "--wait", "--pipe", CLI, "--", "sh", "-c", "echo inside; exit 3")
    assert (result.returncode, result.stdout) == (3, "inside\n"), result.stderr
