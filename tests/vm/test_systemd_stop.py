"""A backup started as a systemd unit and stopped with `systemctl stop` mid-run: systemd signals every
process of the unit's cgroup (KillMode=control-group, the default) or the main process alone
(KillMode=mixed). Either way the job sees SIGTERM once, its trap runs to its end, the --on-exit hooks
run, and nothing is left: no process, no mount, no loop device.

Needs systemd as PID 1: runs in the throwaway VM booted with `vm/run --systemd` (vm/suite's second boot).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from support import CLI, all_ended, log_lines, loop_devices, make_image, wait_for

pytestmark = [pytest.mark.vm, pytest.mark.systemd]

SLOW = 60  # everything is slow under emulation: waits only bound a failure

BACKUP = r"""#!/usr/bin/env bash
# A backup's shape: mount a target, copy into it slowly, unmount in a trap that takes a while. Its waits
# are `wait`s, so the trap runs the moment SIGTERM comes: a second SIGTERM during the trap would kill it.
set -u
log=$1 image=$2
trap 'trap - TERM; echo trap-start >> "$log"; sleep 2; umount /mnt/target; echo trap-done >> "$log"; exit 143' TERM
mkdir -p /mnt/target
"$SANDBOXED_RUN_BIN/sandbox-mount-image" "$image" /mnt/target
echo mounted >> "$log"
while :; do date >> /mnt/target/copy; sleep 0.2 & wait $!; done
"""


@pytest.fixture
def backup(tmp_path: Path) -> tuple[Path, Path, Path]:
    script = tmp_path / "backup.sh"
    script.write_text(BACKUP)
    script.chmod(0o755)
    return script, tmp_path / "log", make_image(tmp_path)


def unit_processes(unit: str) -> list[int]:
    result = subprocess.run(["systemctl", "show", "-P", "ControlGroup", unit], capture_output=True, text=True)
    cgroup = result.stdout.strip()
    if not cgroup:
        return []
    try:
        return [int(p) for p in Path(f"/sys/fs/cgroup{cgroup}/cgroup.procs").read_text().split()]
    except OSError:
        return []


@pytest.mark.parametrize("kill_mode", ["control-group", "mixed"])
def test_systemctl_stop_lets_the_trap_and_the_hooks_finish(backup, kill_mode, no_leftovers):
    script, log, image = backup
    unit = f"backup-{uuid.uuid4().hex[:8]}"
    hook = f"echo hook $SANDBOXED_RUN_STATUS $SANDBOXED_RUN_SIGNAL >> {log}"
    subprocess.run(["systemd-run", f"--unit={unit}", "--collect", f"--setenv=SANDBOXED_RUN_TEST={no_leftovers}",
                    f"--property=KillMode={kill_mode}", "--property=TimeoutStopSec=90",
                    CLI, "--grace", "30", "--tmpfs", "/mnt", "--on-exit", hook, "--",
                    str(script), str(log), str(image)], check=True, timeout=SLOW)
    try:
        assert wait_for(lambda: "mounted" in log_lines(log), timeout=SLOW), log_lines(log)
        assert str(image) in loop_devices()
        # Returns once every process of the unit is gone (or after TimeoutStopSec's SIGKILL).
        subprocess.run(["systemctl", "stop", unit], check=True, timeout=120)
    finally:
        subprocess.run(["systemctl", "kill", "--signal=KILL", unit], capture_output=True)
    assert log_lines(log) == ["mounted", "trap-start", "trap-done", "hook 143"], log_lines(log)
    assert not unit_processes(unit)
    assert wait_for(lambda: all_ended(no_leftovers, {os.getpid()}))
    assert wait_for(lambda: str(image) not in loop_devices()), "the loop device outlived the unit"
    with open("/proc/self/mountinfo") as f:
        assert str(image) not in f.read()


def test_the_unit_is_reported_as_stopped_not_killed(backup, no_leftovers):
    """systemd never had to SIGKILL anything: the launcher exited as the job did."""
    script, log, image = backup
    unit = f"backup-{uuid.uuid4().hex[:8]}"
    subprocess.run(["systemd-run", f"--unit={unit}", f"--setenv=SANDBOXED_RUN_TEST={no_leftovers}",
                    "--property=TimeoutStopSec=90", CLI, "--grace", "30", "--tmpfs", "/mnt", "--",
                    str(script), str(log), str(image)], check=True, timeout=SLOW)
    try:
        assert wait_for(lambda: "mounted" in log_lines(log), timeout=SLOW)
        subprocess.run(["systemctl", "stop", unit], check=True, timeout=120)
        shown = subprocess.run(["systemctl", "show", "-P", "Result", unit], capture_output=True, text=True)
        status = subprocess.run(["systemctl", "show", "-P", "ExecMainStatus", unit], capture_output=True, text=True)
    finally:
        subprocess.run(["systemctl", "kill", "--signal=KILL", unit], capture_output=True)
        subprocess.run(["systemctl", "reset-failed", unit], capture_output=True)
    assert "timeout" not in shown.stdout
    assert status.stdout.strip() == "143"
    assert "trap-done" in log_lines(log)
