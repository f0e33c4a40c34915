"""The sandbox's PID 1 is as hard to trace as the kernel allows: only a job with CAP_SYS_PTRACE on the host
can attach to it. What that takes from its owner (joining its namespaces through its pidfd or /proc/PID/ns),
the reaper hands over: the descriptors of its namespaces.
"""

from __future__ import annotations

import json
import os
import subprocess

from test_named import cli, unique_name
from test_named_users import user_dir, users  # noqa: F401 - fixtures

from support import CLI, PYTHON, launched, wait_for

ATTACH = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
if libc.ptrace(0x4206, 1, None, None) == 0:  # PTRACE_SEIZE
    libc.ptrace(17, 1, None, None)  # PTRACE_DETACH
    print("attached")
else:
    print(os.strerror(ctypes.get_errno()))
"""



# -- who may trace PID 1 ------------------------------------------------------------------------------------

def test_only_a_job_with_cap_sys_ptrace_on_the_host_can_trace_its_pid1(users, user_dir, no_leftovers):  # noqa: F811
    """PID 1 is not dumpable: an ordinary user's job (in its user namespace), a root job in a user namespace and
    a root job without CAP_SYS_PTRACE get EPERM; a root job that keeps it can attach (the watchdog's case)."""
    (_, user), _ = users
    probe = ["--", PYTHON, "-c", ATTACH]
    runs = {"ordinary user": [*user, CLI, *probe], "root --userns": [CLI, "--userns", *probe],
            "root --cap-drop SYS_PTRACE": [CLI, "--cap-drop", "SYS_PTRACE", *probe], "root": [CLI, *probe]}
    seen = {how: subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=user_dir).stdout.strip()
            for how, argv in runs.items()}
    assert seen == {"ordinary user": "Operation not permitted", "root --userns": "Operation not permitted",
                    "root --cap-drop SYS_PTRACE": "Operation not permitted", "root": "attached"}


def test_the_owner_of_a_sandbox_in_a_user_namespace_still_enters_it_and_opens_its_namespaces(
        users, user_dir, no_leftovers):  # noqa: F811
    """What a non-dumpable PID 1 takes from its owner, the reaper hands over: its namespaces' descriptors
    (--enter joins them; Job.namespace_path names one the Job holds)."""
    (_, user), _ = users
    name = unique_name()

    def job_pid() -> int | None:
        listing = cli("--list", "--json", prefix=user, cwd=user_dir)
        shown = [s for s in json.loads(listing.stdout or "[]") if s["name"] == name]
        return shown[0]["job_pid"] if shown else None

    with launched([*user, CLI, "--name", name, "--", "sleep", "1000"], cwd=user_dir) as launcher:
        assert wait_for(job_pid, timeout=30)
        entered = cli("--enter", name, "--", "readlink", "/proc/self/ns/mnt", prefix=user, cwd=user_dir)
        assert entered.returncode == 0, entered.stderr
        assert entered.stdout.strip() == os.readlink(f"/proc/{job_pid()}/ns/mnt")
        assert cli("--stop", name, prefix=user, cwd=user_dir).returncode == 0
        launcher.wait(timeout=30)
    code = ("import os, sandbox\nwith sandbox.Job() as job:\n    path = job.namespace_path('mnt')\n"
            "    inside = job.run(['readlink', '/proc/self/ns/mnt'], capture_output=True, text=True).stdout\n"
            "    print(os.readlink(path) == inside.strip() != os.readlink('/proc/self/ns/mnt'))")
    result = subprocess.run([*user, PYTHON, "-c", code], capture_output=True, text=True, timeout=60, cwd=user_dir)
    assert result.stdout == "True\n", result.stderr
