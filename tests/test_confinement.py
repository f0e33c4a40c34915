"""Confining the job: a real switch of user (user, group, extra_groups), read back from /proc inside the job
and checked from outside (the owner of a file it made, a root-only file it cannot read), through every entry
point; capabilities kept as ambient ones; setuid binaries with and without no_new_privs; an ordinary user,
who may become only themselves; a user namespace, whose ids are its own; --enter; bad values."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from test_isolation_options import AS_NOBODY
from test_limits import caps, fields

import sandbox
from support import CLI, PYTHON, cli_words, launched, through, wait_for

ENTRY_POINTS = ["cli", "run", "Popen", "Job", "run_async", "create_process", "AsyncJob"]
NOBODY = 65534
NET_RAW, CHOWN = 13, 0

# What the job says of itself, and what it can do to the host's files.
PROBE = r"""
grep -E '^(Uid|Gid|Groups|Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):' /proc/self/status
touch "$1/made" && echo "Made: yes"
cat "$1/secret" >/dev/null 2>&1 && echo "Secret: read" || echo "Secret: closed"
"""


@pytest.fixture
def shared_dir(nobody_dir: Path) -> Path:
    """nobody_dir with a root-only file in it."""
    secret = nobody_dir / "secret"
    secret.write_text("root's\n")
    secret.chmod(0o600)
    return nobody_dir


# -- as root: another user of the host ---------------------------------------------------------------------

@pytest.mark.root("switches to another user")
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_the_job_runs_as_the_user_on_the_host(entry, shared_dir, no_leftovers):
    code, out, err = through(entry, ["sh", "-c", PROBE, "probe", str(shared_dir)], {"user": "nobody"})
    assert code == 0, err
    seen = fields(out)
    assert seen["Uid"].split() == [str(NOBODY)] * 4
    assert seen["Gid"].split() == [str(NOBODY)] * 4
    assert seen["Groups"].split() == [str(g) for g in sorted(set(os.getgrouplist("nobody", NOBODY)))]
    assert [caps(seen[n]) for n in ("CapInh", "CapPrm", "CapEff", "CapAmb")] == [0] * 4
    assert (seen["Made"], seen["Secret"]) == ("yes", "closed")
    made = (shared_dir / "made").stat()
    assert (made.st_uid, made.st_gid) == (NOBODY, NOBODY), "a file the job made belongs to that host user"


@pytest.mark.root("switches to another user")
@pytest.mark.parametrize("entry", ["cli", "run"])
def test_group_and_groups_by_name_and_number(entry, shared_dir, no_leftovers):
    options = {"user": str(NOBODY) if entry == "cli" else NOBODY, "group": "daemon", "extra_groups": ["adm", "7"]}
    code, out, err = through(entry, ["sh", "-c", PROBE, "probe", str(shared_dir)], options)
    assert code == 0, err
    seen = fields(out)
    assert seen["Gid"].split() == ["1"] * 4
    assert seen["Groups"].split() == ["4", "7"]
    assert (shared_dir / "made").stat().st_gid == 1


@pytest.mark.root("switches to another user")
@pytest.mark.parametrize("entry", ["cli", "run", "Job"])
def test_a_switched_job_keeps_only_the_capabilities_named(entry, shared_dir, no_leftovers):
    code, out, err = through(entry, ["sh", "-c", PROBE, "probe", str(shared_dir)],
                             {"user": "nobody", "cap_keep": ["CAP_NET_RAW", "chown"]})
    assert code == 0, err
    seen = fields(out)
    kept = 1 << NET_RAW | 1 << CHOWN
    assert [caps(seen[n]) for n in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")] == [kept] * 5
    assert seen["Uid"].split() == [str(NOBODY)] * 4


@pytest.mark.root("makes a setuid-root binary")
@pytest.mark.parametrize("no_new_privs", [False, True])
def test_a_setuid_binary_under_a_switched_user(no_new_privs, nobody_dir, no_leftovers):
    """As documented: a setuid-root binary makes a switched job root again, unless no_new_privs."""
    setuid_id = nobody_dir / "id"
    shutil.copy("/usr/bin/id", setuid_id)
    os.chmod(setuid_id, 0o4755)
    options = {"user": "nobody", **({"no_new_privs": True} if no_new_privs else {})}
    code, out, err = through("cli", [str(setuid_id), "-u"], options)
    assert (code, out.strip()) == (0, str(NOBODY) if no_new_privs else "0"), err


@pytest.mark.root("switches to another user")
def test_the_switched_job_cannot_switch_back(shared_dir, no_leftovers):
    script = "import os\ntry:\n    os.setresuid(0, 0, 0)\nexcept PermissionError:\n    print('refused')"
    code, out, err = through("cli", ["python3", "-c", script], {"user": "nobody"})
    assert (code, out) == (0, "refused\n"), err


@pytest.mark.root("switches to another user")
def test_list_shows_the_user_and_enter_runs_as_it(shared_dir, no_leftovers):
    name = f"user-{os.getpid()}"
    with launched([CLI, "--name", name, "--user", "nobody", "--", "sleep", "60"]) as launcher:
        assert wait_for(lambda: subprocess.run([CLI, "--list"], capture_output=True, text=True).stdout.count(name))
        listing = subprocess.run([CLI, "--list"], capture_output=True, text=True, timeout=60).stdout
        groups = ",".join(str(g) for g in sorted(set(os.getgrouplist("nobody", NOBODY))))
        assert f"    confined: --user {NOBODY} --group {NOBODY} --groups {groups}\n" in listing, listing
        [listed] = [s for s in sandbox.list_running() if s.name == name]
        expected = {"user": NOBODY, "group": NOBODY, "extra_groups": [int(g) for g in groups.split(",")]}
        assert listed.confinement == expected
        entered = subprocess.run([CLI, "--enter", name, "--", "id", "-u"], capture_output=True, text=True, timeout=60)
        assert (entered.returncode, entered.stdout.strip()) == (0, str(NOBODY)), entered.stderr
        subprocess.run([CLI, "--stop", name, "--grace", "0"], timeout=60)
        launcher.wait(timeout=60)


# -- user namespaces and ordinary users ---------------------------------------------------------------------

@pytest.mark.root("maps root")
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_in_a_user_namespace_the_user_is_the_namespaces(entry, no_leftovers):
    """Root with --userns naming itself: uid 0 inside, mapped from root (another user of the host is refused:
    BAD)."""
    code, out, err = through(entry, ["sh", "-c", "id -u; id -g; cat /proc/self/uid_map"],
                             {"userns": True, "user": "root"})
    assert (code, out.split()) == (0, ["0", "0", "0", "0", "1"]), err


@pytest.mark.root("runs as nobody")
def test_an_ordinary_user_may_become_only_themselves(nobody_dir, no_leftovers):
    script = 'grep -E "^(Uid|Gid|CapEff):" /proc/self/status; touch made'
    result = subprocess.run([*AS_NOBODY, CLI, "--user", "nobody", "--", "sh", "-c", script], capture_output=True,
                            text=True, timeout=60, cwd=nobody_dir)
    assert result.returncode == 0, result.stderr
    seen = fields(result.stdout)
    assert seen["Uid"].split() == [str(NOBODY)] * 4, "mapped to their own uid inside"
    assert seen["Gid"].split() == [str(NOBODY)] * 4
    assert caps(seen["CapEff"]) == 0
    assert (nobody_dir / "made").stat().st_uid == NOBODY
    for option in (["--user", "daemon"], ["--group", "daemon"]):
        result = subprocess.run([*AS_NOBODY, CLI, *option, "--", "touch", "never"], capture_output=True, text=True,
                                timeout=60, cwd=nobody_dir)
        assert result.returncode == 125, result.stderr
        assert len(result.stderr.splitlines()) == 1
        assert result.stderr.startswith(f"sandboxed-run: {option[0]} daemon (1): an ordinary user can run the job only")
    assert not (nobody_dir / "never").exists()
    result = subprocess.run([*AS_NOBODY, CLI, "--user", "root", "--", "sh", "-c", "id -u; touch as-root"],
                            capture_output=True, text=True, timeout=60, cwd=nobody_dir)
    assert (result.returncode, result.stdout) == (0, "0\n"), "root inside its user namespace, as by default"
    assert (nobody_dir / "as-root").stat().st_uid == NOBODY, "and nobody on the host"


# -- bad values -------------------------------------------------------------------------------------------

BAD = [  # options, the API's message, the command line's
    ({"user": "no-such-user-here"}, "user no-such-user-here: no such user", "--user no-such-user-here: no such user"),
    ({"group": "no-such-group-here"}, "group no-such-group-here: no such group",
     "--group no-such-group-here: no such group"),
    ({"user": "nobody", "extra_groups": ["adm", "no-such-group-here"]},
     "extra_groups no-such-group-here: no such group",
     "--groups no-such-group-here: no such group"),
    ({"user": "4294967295"}, "user 4294967295 is out of range", "--user 4294967295 is out of range"),
    ({"user": "54321"}, "user 54321: no such user in the user database, so it has no group to take: give group",
     "--user 54321: no such user in the user database, so it has no group to take: give --group"),
    ({"userns": True, "extra_groups": ["adm"]}, "extra_groups: in a user namespace the supplementary groups cannot",
     "--groups: in a user namespace the supplementary groups cannot"),
    ({"userns": True, "user": "nobody"}, "user 65534: in a user namespace only the caller is mapped",
     "--user 65534: in a user namespace only the caller is mapped"),
]


@pytest.mark.root("the user database's answers are root's")
@pytest.mark.parametrize(("options", "message", "cli_message"), BAD)
def test_a_bad_user_is_one_line_naming_it(options, message, cli_message, no_leftovers):
    result = subprocess.run([CLI, *cli_words(options), "--", "true"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(f"sandboxed-run: {cli_message}"), result.stderr
    with pytest.raises(ValueError, match=f"^{message}"):
        sandbox.run(["true"], **options)


def test_the_api_takes_subprocess_types(no_leftovers):
    with pytest.raises(TypeError, match="user must be a user name or number"):
        sandbox.run(["true"], user=1.5)
    with pytest.raises(ValueError, match="extra_groups takes a list of groups, not a single string"):
        sandbox.run(["true"], extra_groups="adm")


# -- the syscall filter -------------------------------------------------------------------------------------

# Mounts a tmpfs on /mnt (inside the sandbox) and says how that went; then what this process's status says.
MOUNT = r"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
done = libc.mount(b"none", b"/mnt", b"tmpfs", 0, None)
print("Mount:", "mounted" if done == 0 else os.strerror(ctypes.get_errno()))
"""
STATUS = "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status"


@pytest.mark.root("mounts without a user namespace")
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_deny_list_refuses_mount_and_the_job_otherwise_runs(entry, no_leftovers):
    job = ["sh", "-c", f"{STATUS}; python3 -c '{MOUNT}'; echo Ran: yes", "job"]
    code, out, err = through(entry, job, {"syscall_filter": ["~@mount"]})
    assert code == 0, err
    seen = fields(out)
    assert (seen["Seccomp"], seen["Mount"], seen["Ran"]) == ("2", "Operation not permitted", "yes"), out
    assert seen["NoNewPrivs"] == "0", "root keeps CAP_SYS_ADMIN: the filter needs no no_new_privs"
    code, out, err = through(entry, ["python3", "-c", MOUNT], {})
    assert (code, fields(out)["Mount"]) == (0, "mounted"), "without the filter the same mount works"


@pytest.mark.parametrize("entry", ["cli", "run"])
def test_the_errno_and_no_new_privs_without_cap_sys_admin(entry, no_leftovers):
    job = ["sh", "-c", f"{STATUS}; python3 -c '{MOUNT}'", "job"]
    code, out, err = through(entry, job, {"syscall_filter": ["~mount umount2"], "syscall_errno": "EACCES",
                                          "cap_drop": ["CAP_SYS_ADMIN"]})
    assert code == 0, err
    seen = fields(out)
    assert (seen["Seccomp"], seen["NoNewPrivs"], seen["Mount"]) == ("2", "1", "Permission denied")


# A child that asks to be traced, then a PTRACE_ATTACH of a sibling: each says how ptrace answered.
PTRACE = """
import ctypes, errno, os, time
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
pid = os.fork()
if pid == 0:
    time.sleep(30)
    os._exit(0)
answer = libc.ptrace(16, pid, None, None)  # PTRACE_ATTACH
print("Ptrace:", "attached" if answer == 0 else os.strerror(ctypes.get_errno()), flush=True)
os.kill(pid, 9)
os.waitpid(pid, 0)
"""


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_deny_list_of_ptrace_refuses_tracing_and_nothing_else(entry, no_leftovers):
    code, out, err = through(entry, ["python3", "-c", PTRACE], {"syscall_filter": ["~ptrace"]})
    assert (code, fields(out)["Ptrace"]) == (0, "Operation not permitted"), err
    code, out, err = through(entry, ["python3", "-c", PTRACE], {})
    assert (code, fields(out)["Ptrace"]) == (0, "attached"), "without the filter the same attach works"


@pytest.mark.parametrize("entry", ["cli", "run", "AsyncJob"])
def test_an_allow_list_allows_only_what_it_names(entry, no_leftovers):
    code, out, err = through(entry, ["ls", "/"], {"syscall_filter": ["@system-service"]})
    assert (code, "proc" in out.split()) == (0, True), err
    code, out, err = through(entry, ["ls", "/"], {"syscall_filter": ["@system-service", "~@file-system"]})
    assert code != 0 and out == "", "the second SPEC takes @file-system out of the allow list"
    if entry != "AsyncJob":
        assert "Operation not permitted" in err


def test_the_job_cannot_remove_the_filter_nor_escape_by_another_architecture(no_leftovers):
    """A permissive filter of the job's own refuses nothing less; an x32 call (another system call table on
    x86_64) kills the process, as a call of any architecture but the native one does."""
    undo = "import pyseccomp\npyseccomp.SyscallFilter(pyseccomp.ALLOW).load()\n" + MOUNT
    result = subprocess.run([CLI, "--syscall-filter", "~@mount", "--", PYTHON, "-c", undo], capture_output=True,
                            text=True, timeout=60)
    assert (result.returncode, fields(result.stdout).get("Mount")) == (0, "Operation not permitted"), result.stderr
    if os.uname().machine != "x86_64":
        return
    x32 = "import ctypes\nctypes.CDLL(None).syscall(0x40000000 | 165, b'none', b'/mnt', b'tmpfs', 0, None)"
    result = subprocess.run([CLI, "--syscall-filter", "~@mount", "--", PYTHON, "-c", x32], timeout=60)
    assert result.returncode == -signal.SIGSYS


def test_children_inherit_the_filter_and_hooks_and_reaper_do_not(tmp_path, no_leftovers):
    hook = tmp_path / "hook"
    job = "sh -c 'grep ^Seccomp: /proc/self/status'; grep ^Seccomp: /proc/1/status"
    result = subprocess.run([CLI, "--syscall-filter", "~@mount", "--on-exit", f"grep ^Seccomp: /proc/self/status > "
                             f"{hook}", "--", "sh", "-c", job], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Seccomp:\t2", "a grandchild of the job"
    assert lines[-1] == "Seccomp:\t0", "the reaper, PID 1"
    assert fields(hook.read_text())["Seccomp"] == "0", "the hook"


@pytest.mark.parametrize(("value", "message"), [
    ("~@mount @nosuch", "unknown group @nosuch (groups: @default, @aio"),
    ("~mount fly @nope", "unknown system call or group fly, @nope (groups:"),
    ("~", "'~': name system calls or @groups"),
    ("~mount:EACCES", "mount:EACCES: an errno per call is not supported"),
])
def test_an_unknown_name_is_a_usage_error_naming_it(value, message, no_leftovers):
    result = subprocess.run([CLI, "--syscall-filter", value, "--", "true"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("sandboxed-run: --syscall-filter"), result.stderr
    assert message in result.stderr and len(result.stderr.splitlines()) == 1
    with pytest.raises(ValueError, match="^syscall_filter"):
        sandbox.run(["true"], syscall_filter=[value])


def test_a_bad_errno_and_a_single_string(no_leftovers):
    result = subprocess.run([CLI, "--syscall-filter", "~mount", "--syscall-errno", "EFLY", "--", "true"],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr.splitlines()) == (2, [
        "sandboxed-run: --syscall-errno: unknown errno 'EFLY' (EPERM, EACCES, ENOSYS, ...) (see --help)"])
    with pytest.raises(ValueError, match="syscall_filter takes a list of filters, not a single string"):
        sandbox.run(["true"], syscall_filter="~@mount")
    with pytest.raises(ValueError, match="syscall_errno 5000: an errno is from 1 to 4095"):
        sandbox.run(["true"], syscall_filter=["~mount"], syscall_errno=5000)


# -- Landlock ---------------------------------------------------------------------------------------------

# Writes beneath $1 (a write path) and beside it, reads /etc (a read path) and /root (neither).
LANDLOCKED = r"""
echo a > "$1/inside" && echo "Inside: written"
echo b > "$1.outside" 2>/dev/null && echo "Outside: written" || echo "Outside: refused"
cat /etc/hostname >/dev/null && echo "Etc: read"
ls /root >/dev/null 2>&1 && echo "Root: listed" || echo "Root: refused"
"""


@pytest.fixture
def writable(nobody_dir: Path) -> Path:
    place = nobody_dir / "w"
    place.mkdir(mode=0o777)
    return place


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_landlock_confines_reading_and_writing(entry, writable, no_leftovers):
    # /dev/null: a file, not a directory, and written to like any other.
    options = {"landlock_read": ["/usr", "/etc"], "landlock_write": [str(writable), "/dev/null"]}
    code, out, err = through(entry, ["sh", "-c", LANDLOCKED, "job", str(writable)], options)
    assert code == 0, err
    seen = fields(out)
    assert (seen["Inside"], seen["Outside"], seen["Etc"], seen["Root"]) == ("written", "refused", "read", "refused")
    assert (writable / "inside").read_text() == "a\n"
    assert not Path(f"{writable}.outside").exists()


def test_the_job_cannot_leave_its_landlock_domain(writable, no_leftovers):
    """A domain of the job's own that handles nothing (allows everything) restricts nothing less."""
    undo = r"""
import ctypes, os, struct
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
attr = struct.pack("=Q", 1 << 1)  # handles WRITE_FILE, with no rule: a domain that refuses every write
fd = libc.syscall(444, attr, ctypes.c_size_t(8), ctypes.c_uint32(0))
print("Restricted:", libc.syscall(446, fd, 0))
try:
    open("/var/tmp/landlock-escape", "w")
    print("Escaped: yes")
except PermissionError:
    print("Escaped: no")
"""
    python = os.path.realpath(PYTHON)  # our interpreter, and what it reads, may live anywhere: read beneath /
    result = subprocess.run([CLI, "--landlock-read", "/", "--landlock-write", str(writable), "--", python, "-c",
                             undo], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert fields(result.stdout) == {"Restricted": "0", "Escaped": "no"}
    assert not os.path.exists("/var/tmp/landlock-escape")


def test_a_command_cannot_widen_the_next_ones_landlock_domain_with_a_link(writable, no_leftovers):
    """A read path below a write path: a session's command (or the job, before --enter) replaced it with a symbolic
    link to /root, and the next command's ruleset, made by opening the paths again, followed it: that command read
    /root. The paths are resolved once, before anything of the job runs, and opened without following a link; a
    path that became one refuses the command (125: SandboxError)."""
    listed = writable / "listed"
    listed.mkdir()
    swap = f"rmdir {listed} && ln -s /root {listed} && echo swapped"
    with sandbox.Job(landlock_read=["/usr", "/etc", str(listed)], landlock_write=[str(writable), "/dev/null"]) as job:
        assert job.run(["sh", "-c", swap], capture_output=True).stdout == b"swapped\n"
        with pytest.raises(sandbox.SandboxError) as refused:
            job.run(["sh", "-c", "ls /root > /dev/null && echo read"], capture_output=True)
        assert refused.value.exit_code == 125 and str(listed) in str(refused.value)


def test_landlock_with_a_switched_user_takes_no_new_privs_and_the_reaper_is_not_confined(writable, no_leftovers):
    job = 'grep -E "^NoNewPrivs:" /proc/self/status; ls /proc/1/root/root >/dev/null 2>&1; echo "Pid1: $?"'
    result = subprocess.run([CLI, "--landlock-read", "/usr", "--landlock-read", "/proc", "--user", "nobody",
                             "--on-exit", f"touch {writable}/hook", "--", "sh", "-c", job], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert fields(result.stdout)["NoNewPrivs"] == "1"
    assert (writable / "hook").exists(), "the hook writes where the job may not"


def test_without_landlock_the_job_never_runs_unconfined(writable, no_leftovers):
    """A kernel without Landlock, as seen by a launcher whose landlock_create_ruleset fails with ENOSYS (our own
    syscall filter on an outer sandbox): one line, 125, and the job never starts."""
    inner = [CLI, "--landlock-write", str(writable), "--", "touch", f"{writable}/ran"]
    result = subprocess.run([CLI, "--syscall-filter", "~landlock_create_ruleset", "--syscall-errno", "ENOSYS", "--",
                             *inner], capture_output=True, text=True, timeout=60)
    assert result.returncode == 125
    assert result.stderr.splitlines() == ["sandboxed-run: --landlock-write: this kernel has no Landlock (Linux 5.13 "
                                          "and later, with landlock among its lsm= modules); the job would run "
                                          "unconfined"]
    assert not (writable / "ran").exists()


@pytest.mark.parametrize(("option", "value", "code", "message"), [
    ("landlock_read", "relative", 2, "--landlock-read relative: the path must be absolute"),
    ("landlock_write", "/no/such/place", 125, "cannot confine the job to /no/such/place: No such file or directory"),
])
def test_a_bad_landlock_path_is_one_line(option, value, code, message, no_leftovers):
    result = subprocess.run([CLI, *cli_words({option: [value]}), "--", "true"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == code
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(f"sandboxed-run: {message}"), \
        result.stderr


def test_enter_gets_the_filter_and_the_domain(writable, no_leftovers):
    name = f"sealed-{os.getpid()}"
    options = ["--syscall-filter", "~@mount", "--landlock-read", "/usr", "--landlock-read", "/proc",
               "--landlock-write", str(writable)]
    with launched([CLI, "--name", name, *options, "--", "sleep", "60"]) as launcher:
        assert wait_for(lambda: subprocess.run([CLI, "--list"], capture_output=True, text=True).stdout.count(name))
        listing = subprocess.run([CLI, "--list"], capture_output=True, text=True, timeout=60).stdout
        assert (f"    confined: --syscall-filter '~@mount' --landlock-read /usr --landlock-read /proc --landlock-write "
                f"{writable}\n") in listing, listing
        job = f"grep ^Seccomp: /proc/self/status; touch {writable}/entered; touch {writable}.beside || echo refused"
        entered = subprocess.run([CLI, "--enter", name, "--", "sh", "-c", job], capture_output=True, text=True,
                                 timeout=60)
        assert entered.stdout.splitlines() == ["Seccomp:\t2", "refused"], entered.stderr
        assert (writable / "entered").exists() and not Path(f"{writable}.beside").exists()
        subprocess.run([CLI, "--stop", name, "--grace", "0"], timeout=60)
        launcher.wait(timeout=60)


def test_an_exec_the_filter_refuses_exits_as_a_shell_would_even_when_the_report_is_refused_too(no_leftovers):
    """The failed exec's report to the reaper needs write(2), which an allow list of @default refuses: the job
    then 'exited' 125 (ours) without a word, where a shell's status is 126. A filter that lets write through
    still gets the one line."""
    silent = subprocess.run([CLI, "--syscall-filter", "@default", "--syscall-filter", "~execve execveat", "--", "true"],
                            capture_output=True, text=True, timeout=60)
    assert silent.returncode == 126, silent
    said = subprocess.run([CLI, "--syscall-filter", "~execve execveat", "--", "true"], capture_output=True, text=True,
                          timeout=60)
    assert (said.returncode, said.stderr) == (126, "sandboxed-run: true: cannot execute: Operation not permitted\n")
