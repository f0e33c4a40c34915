"""The registry on the VM's kernel (Debian 12's 6.1), which has no SO_PEERPIDFD: a reaper cannot ask the
kernel which PID namespace a client lives in, so our clients send a pidfd of themselves and the reaper checks
that process (helpers/reaper/peers.py). --list, --enter and --stop work from the host; a job's own raw Stop,
with its pidfd or none, is refused and the sandbox runs on."""

from __future__ import annotations

import json
import os
import platform
import subprocess

import pytest

from sandboxed_run_helpers.shared import registry
from support import CLI, PYTHON, launched, wait_for

pytestmark = [pytest.mark.vm]

SLOW = 120  # everything is slow under emulation: waits only bound a failure

ATTACK = """
import os, socket, sys
from sandboxed_run_helpers.shared import wire
for proof in ("none", "own"):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect(sys.argv[1])
    sock.settimeout(30)
    wire.send(sock, wire.Stop(0.0, wire.StopReason.REQUESTED, False), [os.pidfd_open(os.getpid())] * (proof == "own"))
    message, _, _ = wire.recv(sock)
    print(proof, type(message).__name__, getattr(message, "errno", None))
"""


def _kernel() -> tuple[int, int]:
    major, minor = platform.release().split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


@pytest.mark.skipif(_kernel() >= (6, 5), reason="this kernel has SO_PEERPIDFD: tests/test_reach.py covers it")
def test_the_host_reaches_a_named_sandbox_and_its_job_does_not(tmp_path, no_leftovers):
    name = f"t-{os.urandom(5).hex()}"
    log, go = tmp_path / "trap.log", tmp_path / "go"
    job = f'trap "echo trap \\$? >> {log}" EXIT; while [ ! -e {go} ]; do sleep 0.1; done; exit 7'
    with launched([CLI, "--name", name, "--", "sh", "-c", job], cwd=tmp_path) as launcher:
        def listed() -> list:
            shown = json.loads(subprocess.run([CLI, "--list", "--json"], capture_output=True, text=True,
                                              timeout=SLOW).stdout)
            return [s["state"] for s in shown if s["name"] == name]

        assert wait_for(lambda: listed() == ["running"], timeout=SLOW), listed()
        entered = subprocess.run([CLI, "--enter", name, "--", "cat", "/proc/1/comm"], capture_output=True, text=True,
                                 timeout=SLOW)
        assert (entered.returncode, entered.stdout) == (0, "sandbox-reaper\n"), entered.stderr
        # A job that bares the host's registry (it is root: it may unmount the empty one the sandbox shows) and
        # speaks the protocol itself.
        socket_path = os.path.join(registry.ROOT_DIRECTORY, name)
        attack = subprocess.run([CLI, "--", "sh", "-c", f'umount {registry.ROOT_DIRECTORY} && exec "$@"', "sh",
                                 PYTHON, "-c", ATTACK, socket_path], capture_output=True, text=True, timeout=SLOW)
        assert attack.stdout.splitlines() == ["none Failed 13", "own Failed 13"], attack
        assert launcher.poll() is None and not log.exists(), "the attack ended the sandbox"
        go.touch()
        assert launcher.wait(timeout=SLOW) == 7 and log.read_text() == "trap 7\n"
    with launched([CLI, "--name", name, "--", "sleep", "1000"], cwd=tmp_path) as launcher:
        assert wait_for(lambda: listed() == ["running"], timeout=SLOW), listed()
        stopped = subprocess.run([CLI, "--stop", name], capture_output=True, text=True, timeout=SLOW)
        assert (stopped.returncode, stopped.stderr) == (0, "")
        assert launcher.wait(timeout=SLOW) == -15
