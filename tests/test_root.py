"""--root DIR (root=): the job's / is DIR, switched to with pivot_root and the host's detached. Checked with a
root the test builds from busybox (and one that borrows the host's /usr): what the job sees of /, /proc and
/dev, its mount table from inside and from outside, --read-only / and a throwaway --overlay DIR:/, binds of
host paths into it, a user namespace, --enter, the confining options in there, and one clear line for each
refusal."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from test_named import cli, unique_name, wait_listed

import sandbox
from support import CLI, cli_words, launched, one_line, run_in, wait_for

ENTRY_POINTS = ["cli", "run", "Popen", "Job", "run_async", "create_process", "AsyncJob"]
BUSYBOX = shutil.which("busybox") or "/bin/busybox"
APPLETS = ("sh", "ls", "cat", "echo", "touch", "rm", "mkdir", "id", "pwd", "grep", "sleep", "mount", "test")
# What the job's mount table holds in a busybox root: the root, our /dev with its nodes, our /proc.
OUR_MOUNTS = {"/", "/dev", "/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty",
              "/dev/pts", "/dev/shm", "/proc"}


def make_root(directory: Path) -> Path:
    """A root file system of busybox: /bin with its applets, empty /proc, /dev, /tmp and /mnt, a marker."""
    (directory / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, directory / "bin" / "busybox")
    for applet in APPLETS:
        (directory / "bin" / applet).symlink_to("busybox")
    for name in ("proc", "dev", "tmp", "mnt"):
        (directory / name).mkdir()
    (directory / "tmp").chmod(0o1777)
    (directory / "MARKER").write_text("the new root\n")
    return directory


@pytest.fixture
def busybox_root(tmp_path):
    return make_root(tmp_path / "root")


def tree(directory: Path) -> dict[str, bytes | str]:
    """Every path below directory with its content (a link: its target): what a run must leave unchanged."""
    found: dict[str, bytes | str] = {}
    for path in sorted(directory.rglob("*")):
        key = str(path.relative_to(directory))
        found[key] = os.readlink(path) if path.is_symlink() else path.read_bytes() if path.is_file() else "dir"
    return found


def mount_points(mountinfo: str) -> set[str]:
    return {line.split()[4] for line in mountinfo.splitlines()}


def refusal(stderr: str) -> str:
    """The one line of a refusal, after the warning a run whose job keeps root's capabilities gets first."""
    return one_line("".join(line for line in stderr.splitlines(keepends=True) if WARNING not in line))


# -- what the job sees ------------------------------------------------------------------------------------

@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_the_job_sees_the_new_root_with_its_own_proc_and_a_minimal_dev(entry, busybox_root):
    script = ("cat /MARKER; ls /; pwd; cat /proc/1/comm; test -e /etc/hostname || echo no-host-etc; "
              "echo x > /dev/null && cat /dev/null && echo dev-works; cat /proc/self/mountinfo")
    status, out, err = run_in(entry, {"root": str(busybox_root)}, script)
    assert status == 0, err
    lines = out.splitlines()
    assert lines[:10] == ["the new root", "MARKER", "bin", "dev", "mnt", "proc", "tmp", "/", "sandbox-reaper",
                          "no-host-etc"], out
    assert lines[10] == "dev-works"
    # Nothing of the host's is left in its mount table: the new root's own mounts and ours alone.
    assert mount_points("\n".join(lines[11:])) == OUR_MOUNTS


def test_from_outside_the_jobs_mount_table_holds_nothing_of_the_hosts(busybox_root):
    with sandbox.Popen(["sh", "-c", "echo ready; exec sleep 1000"], root=str(busybox_root),
                       stdout=subprocess.PIPE, text=True) as job:
        assert job.stdout.readline() == "ready\n"
        mountinfo = Path(f"/proc/{job.pid}/mountinfo").read_text()
        root_line = next(line.split() for line in mountinfo.splitlines() if line.split()[4] == "/")
        host_root = next(line.split() for line in Path("/proc/self/mountinfo").read_text().splitlines()
                         if line.split()[4] == "/")
        assert mount_points(mountinfo) == OUR_MOUNTS
        # Its / is our directory (the root of the file system the host has it on, below it), never the host's /.
        assert root_line[3].endswith(str(busybox_root)) and root_line[3] != host_root[3]
        assert os.stat(f"/proc/{job.pid}/root/MARKER").st_ino == os.stat(busybox_root / "MARKER").st_ino
        job.kill()


def test_the_job_starts_in_the_new_roots_slash_unless_a_cwd_is_given(busybox_root):
    os.chdir(busybox_root)  # a directory that exists in the new root too: still not where the job starts
    try:
        with sandbox.Job(root=str(busybox_root)) as job:
            default = job.run(["pwd"], capture_output=True, text=True)
            given = job.run(["pwd"], capture_output=True, text=True, cwd="/mnt")
            relative = job.run(["pwd"], capture_output=True, text=True, cwd="bin")
    finally:
        os.chdir("/")
    assert (default.stdout, given.stdout, relative.stdout) == ("/\n", "/mnt\n", "/bin\n")
    result = subprocess.run([CLI, "--root", str(busybox_root), "--cwd", "/nowhere", "--", "pwd"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 125 and "/nowhere" in refusal(result.stderr)


def test_a_program_missing_from_the_new_root_is_not_found(busybox_root):
    # python3 is on the host's PATH, and not in the new root.
    result = subprocess.run([CLI, "--root", str(busybox_root), "--", "python3", "-c", "pass"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 127 and "python3: command not found" in refusal(result.stderr)


# -- the mount options in the new root -------------------------------------------------------------------

def test_read_only_slash_makes_the_new_root_read_only(busybox_root):
    script = ("touch /new 2>/dev/null || echo refused; touch /tmp/new 2>/dev/null || echo refused; "
              "touch /mnt/new && echo hole; echo x > /dev/null && echo dev-works")
    status, out, err = run_in("cli", {"root": str(busybox_root), "read_only": ["/"], "tmpfs": ["/mnt"]}, script)
    assert (status, out) == (0, "refused\nrefused\nhole\ndev-works\n"), err
    assert not (busybox_root / "new").exists() and not (busybox_root / "mnt" / "new").exists()


@pytest.mark.parametrize("entry", ["cli", "Job"])
def test_an_overlay_on_slash_gives_a_throwaway_root(entry, busybox_root):
    before = tree(busybox_root)
    script = "echo kept > /new && echo more >> /MARKER && rm /bin/id && cat /new /MARKER && ls / && rm /MARKER"
    status, out, err = run_in(entry, {"root": str(busybox_root), "overlay": [(str(busybox_root), "/")]}, script)
    assert (status, out) == (0, "kept\nthe new root\nmore\nMARKER\nbin\ndev\nmnt\nnew\nproc\ntmp\n"), err
    assert tree(busybox_root) == before  # every write went to the overlay's tmpfs, gone with the sandbox


def test_an_empty_tmpfs_root_with_the_hosts_usr_runs_python(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    options = {"root": str(root), "tmpfs": ["/"], "ro_bind": [("/usr", "/usr")],
               "symlink": [(os.readlink(f"/{name}"), f"/{name}") for name in ("bin", "lib", "lib64", "sbin")
                           if os.path.islink(f"/{name}")]}
    status, out, err = run_in("run", options, "exec python3 -c 'import os; print(sorted(os.listdir(\"/\")))'")
    assert status == 0, err
    links = [path.lstrip("/") for _, path in options["symlink"]]
    assert out == repr(sorted(["usr", "proc", "dev", *links])) + "\n"
    assert list(root.iterdir()) == []


def test_binds_take_host_paths_to_paths_in_the_new_root(tmp_path, busybox_root):
    host = tmp_path / "host-data"
    host.mkdir()
    (host / "f").write_text("from the host\n")
    script = "cat /mnt/f /opt/f && echo written > /mnt/g && (echo no > /opt/g 2>/dev/null || echo read-only)"
    status, out, err = run_in("cli", {"root": str(busybox_root), "bind": [(str(host), "/mnt")],
                                      "ro_bind": [(str(host), "/opt")], "tmpfs": ["/tmp"], "mkdir": True}, script)
    assert (status, out) == (0, "from the host\nfrom the host\nread-only\n"), err
    assert (host / "g").read_text() == "written\n"
    assert (busybox_root / "opt").is_dir()  # --mkdir made the mount point in DIR, where it stays


def test_a_bound_host_dev_replaces_the_minimal_one(busybox_root):
    status, out, err = run_in("cli", {"root": str(busybox_root), "bind": [("/dev", "/dev")]},
                              "ls /dev | grep -c . ; grep -c ' /dev/pts ' /proc/self/mountinfo")
    assert status == 0, err
    count, pts = out.split()
    host_pts = Path("/proc/self/mountinfo").read_text().count(" /dev/pts ")
    assert int(count) == len(os.listdir("/dev")) and int(pts) == host_pts  # the host's, with the mounts below it


@pytest.mark.parametrize("entry", ["cli", "Job"])
@pytest.mark.parametrize("options, script, expected", [
    ({"syscall_filter": ["~@mount"]}, "mount -t tmpfs none /mnt 2>/dev/null || echo refused", "refused\n"),
    ({"cap_drop": ["ALL"], "rlimit": ["NOFILE=100"]}, "grep CapEff /proc/self/status; ls /proc/self/fd | grep -c .",
     "CapEff:\t0000000000000000\n4\n"),
    ({"landlock_read": ["/"], "landlock_write": ["/tmp", "/dev"]},
     "touch /x 2>/dev/null || echo refused; touch /tmp/y && echo allowed", "refused\nallowed\n"),
])
def test_confining_options_work_in_the_new_root(entry, options, script, expected, busybox_root):
    """What sets up the job's process (capabilities, limits, the syscall filter with libseccomp, Landlock) and what
    checks a session's caller are loaded before the host's files are out of reach."""
    status, out, err = run_in(entry, {"root": str(busybox_root), **options}, script)
    assert (status, out) == (0, expected), err


# -- other ways in ---------------------------------------------------------------------------------------

def test_a_user_namespace_as_an_ordinary_user(nobody_dir):
    root = make_root(nobody_dir / "root")
    for path in (root, *root.rglob("*")):
        os.lchown(path, 65534, 65534)  # the overlay copies up only what the user namespace maps
    script = "cat /MARKER; id -u; cat /proc/1/comm; echo x > /dev/null && echo dev-works; touch /tmp/t && echo w"
    argv = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", CLI, "--root", str(root),
            "--overlay", f"{root}:/", "--", "sh", "-c", script]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=nobody_dir)
    assert (result.returncode, result.stdout) == (0, "the new root\n0\nsandbox-reaper\ndev-works\nw\n"), result.stderr
    assert not (root / "tmp" / "t").exists()


def test_enter_finds_the_new_root_and_list_shows_it(busybox_root, no_leftovers):
    name = unique_name()
    with launched([CLI, "--name", name, "--root", str(busybox_root), "--", "sleep", "1000"]):
        assert wait_listed(name)["confinement"] == {"root": str(busybox_root)}
        result = cli("--enter", name, "--", "sh", "-c", "cat /MARKER; pwd; cat /proc/1/comm; ls /")
        assert (result.returncode, result.stdout) == (
            0, "the new root\n/\nsandbox-reaper\nMARKER\nbin\ndev\nmnt\nproc\ntmp\n"), result.stderr
        assert cli("--stop", name).returncode == 0


# -- a job that is root with the host's capabilities ---------------------------------------------------------

# Each directory PID 1 holds a descriptor of (the /proc it was started under, the registry's directory...) that
# the job could list through /proc/1/fd: a way out of the new root.
REACH_PID1 = "for f in /proc/1/fd/*; do ls $f/ >/dev/null 2>&1 && echo reached; done; echo done"
WARNING = "the job runs as root with the host's capabilities, which no root directory holds in"


def _run_warned(entry: str, options: dict, script: str) -> tuple[int, str, str]:
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        status, out, err = run_in(entry, options, script)
    return status, out, err + "".join(f"{w.message}\n" for w in caught if w.category is RuntimeWarning)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_root_job_with_the_hosts_capabilities_is_warned_that_it_can_leave(entry, busybox_root):
    status, out, err = _run_warned(entry, {"root": str(busybox_root)}, REACH_PID1)
    assert status == 0, err
    assert WARNING in err
    assert "reached" in out, "the warning names a way out that is not there: reword it"


def test_keeping_cap_sys_ptrace_alone_is_warned_of_too(busybox_root):
    status, out, err = _run_warned("cli", {"root": str(busybox_root), "cap_keep": ["SYS_PTRACE"]}, REACH_PID1)
    assert status == 0 and "reached" in out and WARNING in err, err


@pytest.mark.parametrize("remedy", [{"userns": True}, {"user": 65534}, {"cap_drop": ["ALL"]},
                                    {"cap_keep": ["NET_BIND_SERVICE"]}],
                         ids=["userns", "user", "cap-drop ALL", "cap-keep NET_BIND_SERVICE"])
def test_the_remedies_the_warning_names_keep_the_job_from_pid_1s_descriptors(remedy, busybox_root):
    status, out, err = _run_warned("cli", {"root": str(busybox_root), **remedy}, REACH_PID1)
    assert (status, out) == (0, "done\n"), err
    assert WARNING not in err


# -- refusals ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("words, status, message", [
    (["--root", "relative"], 2, "--root relative: the path must be absolute"),
    (["--root", "/"], 2, "--root /: that is the root already"),
    (["--root", "{root}", "--bind", "/tmp:/"], 2, "--bind /: with --root {root} the job's / is {root}"),
    (["--root", "{root}", "--no-proc"], 2, "--no-proc and --root exclude each other"),
    (["--root", "{root}/nowhere"], 125, "--root {root}/nowhere: does not exist"),
    (["--root", "{root}/MARKER"], 125, "--root {root}/MARKER: not a directory"),
    (["--root", "{root}/bin"], 125, "--root (its /dev): {root}/bin/dev does not exist: create it"),
    (["--root", "{root}", "--mkdir", "--dir", "/link/made-by-test-root"], 125,
     "a symbolic link on its way leads out of it (to /tmp/made-by-test-root)"),
    (["--root", "{root}/slash"], 125, "--root {root}/slash: leads to / itself"),
    # A kernel's file system is no root: --mkdir would make cgroups of its /proc and /dev, say.
    (["--root", "/proc/sys"], 125, "--root /proc/sys: lies in /proc, a kernel file system"),
    (["--root", "/sys/fs/cgroup", "--mkdir"], 125, "--root /sys/fs/cgroup: lies in /sys, a kernel file system"),
])
def test_bad_values_get_one_line(busybox_root, words, status, message):
    (busybox_root / "link").symlink_to("/tmp")  # absolute: in the new root that is its /tmp
    (busybox_root / "slash").symlink_to("/")
    words = [word.format(root=busybox_root) for word in words]
    result = subprocess.run([CLI, *words, "--", "true"], capture_output=True, text=True, timeout=60)
    assert result.returncode == status
    assert message.format(root=busybox_root) in refusal(result.stderr)
    assert not Path("/tmp/made-by-test-root").exists()
    assert not Path("/sys/fs/cgroup/proc").exists() and not Path("/sys/fs/cgroup/dev").exists()


def test_the_api_says_the_same(busybox_root):
    with pytest.raises(ValueError, match="root relative: the path must be absolute"):
        sandbox.run(["true"], root="relative")
    with pytest.raises(ValueError, match="proc=False and root exclude each other"):
        sandbox.run(["true"], root=str(busybox_root), proc=False)
    with pytest.raises(sandbox.SandboxError, match="does not exist"):
        sandbox.run(["true"], root=str(busybox_root / "nowhere"))
    assert cli_words({"root": "/r"}) == ["--root", "/r"]


def test_the_hosts_mounts_are_untouched_afterwards(busybox_root):
    before = Path("/proc/self/mountinfo").read_text()
    status, _, err = run_in("cli", {"root": str(busybox_root), "overlay": [(str(busybox_root), "/")],
                                    "tmpfs": ["/tmp"]}, "true")
    assert status == 0, err
    assert wait_for(lambda: str(busybox_root) not in Path("/proc/self/mountinfo").read_text())
    assert mount_points(Path("/proc/self/mountinfo").read_text()) == mount_points(before)
