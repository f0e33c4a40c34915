"""The mounts people expect: mount points made where they may be, --dir, --symlink, a minimal --dev, tmpfs size
and mode, --overlay over a read-only tree (private or kept), colons in paths, and one clear line for each
refusal. Checked from inside the job (stat, statvfs, /proc/self/mountinfo) and from the host afterwards."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import sandbox
from support import CLI, host_mounts, one_line, read_status, run_in

ENTRY_POINTS = ["cli", "run", "Popen", "Job", "run_async", "create_process", "AsyncJob"]


# -- mount points -------------------------------------------------------------------------------------

@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_mount_points_below_a_tmpfs_are_made_there(entry, tmp_path):
    top = tmp_path / "top"
    top.mkdir()
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_text("data")
    conf = tmp_path / "app.conf"
    conf.write_text("conf")
    options = {"tmpfs": [str(top)], "bind": [f"{data}:{top}/a/b/data"], "ro_bind": [f"{conf}:{top}/etc/app.conf"]}
    before = host_mounts()
    status, out, err = run_in(entry, options, f"cat {top}/a/b/data/f {top}/etc/app.conf; "
                              f"stat -c %F {top}/a/b {top}/etc/app.conf")
    assert (status, out) == (0, "dataconfdirectory\nregular file\n"), err
    assert list(top.iterdir()) == [] and host_mounts() == before  # made in the tmpfs, gone with it


@pytest.mark.parametrize("entry", ["cli", "run"])
def test_a_missing_mount_point_on_the_host_needs_mkdir(entry, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    target = tmp_path / "new" / "mount"
    status, _, err = run_in(entry, {"bind": [f"{data}:{target}"]}, "true")
    assert status == 125 and f"{target} does not exist" in one_line(err)
    assert ("--mkdir" if entry == "cli" else "mkdir=True") in err
    assert not target.parent.exists()
    status, out, err = run_in(entry, {"bind": [f"{data}:{target}"], "mkdir": True}, f"mountpoint -q {target} && echo m")
    assert (status, out) == (0, "m\n"), err
    assert target.is_dir()  # asked for on the host: it stays


@pytest.mark.parametrize("entry", ["cli", "Job"])
def test_dir_and_symlink(entry, tmp_path):
    top = tmp_path / "top"
    top.mkdir()
    options = {"tmpfs": [str(top)], "dir": [f"{top}/a/b"], "symlink": [f"../../etc/hostname:{top}/links/name",
                                                                        f"{top}/a:{top}/to-a"]}
    status, out, err = run_in(entry, options, f"stat -c '%a %F' {top}/a/b; readlink {top}/links/name {top}/to-a; "
                              f"test -d {top}/to-a/b && echo through")
    assert (status, out) == (0, f"755 directory\n../../etc/hostname\n{top}/a\nthrough\n"), err
    assert not list(top.iterdir())


def test_dir_and_symlink_on_the_host_need_mkdir(tmp_path):
    for options in ({"dir": [str(tmp_path / "d")]}, {"symlink": [f"/etc:{tmp_path}/l"]}):
        status, _, err = run_in("cli", options, "true")
        assert status == 125 and "would be made on the host" in one_line(err) and "--mkdir" in err
        status, _, err = run_in("cli", {**options, "mkdir": True}, "true")
        assert status == 0, err
    assert (tmp_path / "d").is_dir() and os.readlink(tmp_path / "l") == "/etc"


# -- a minimal /dev -----------------------------------------------------------------------------------

DEV_CHECK = r"""
import os, stat, errno
for name in ("null", "zero", "full", "random", "urandom", "tty"):
    st = os.stat("/dev/" + name)
    print(name, stat.S_ISCHR(st.st_mode), os.major(st.st_rdev), os.minor(st.st_rdev))
with open("/dev/null", "w") as f: f.write("gone")
with open("/dev/zero", "rb") as f: print("zero", f.read(4) == bytes(4))
with open("/dev/urandom", "rb") as f: print("urandom", len(f.read(16)))
try:
    with open("/dev/full", "w") as f: f.write("x")
except OSError as exc: print("full", errno.errorcode[exc.errno])
leader, follower = os.openpty()
print("pty", os.ttyname(follower).startswith("/dev/pts/"), os.readlink("/dev/ptmx"))
print("ptys", os.listdir("/dev/pts") != [])
with open("/dev/shm/x", "w") as f: f.write("x")
print("shm", oct(os.stat("/dev/shm").st_mode & 0o7777))
print(sorted(os.listdir("/dev")))
"""


@pytest.mark.parametrize("userns", [False, True])
@pytest.mark.parametrize("entry", ["cli", "run", "AsyncJob"])
def test_a_minimal_dev_is_usable(entry, userns, tmp_path):
    script = tmp_path / "dev_check.py"
    script.write_text(DEV_CHECK)
    options = {"dev": ["/dev"], **({"userns": True} if userns else {})}
    status, out, err = run_in(entry, options, f"{sys.executable} {script}")
    assert status == 0, err
    lines = out.splitlines()
    assert lines[:6] == ["null True 1 3", "zero True 1 5", "full True 1 7", "random True 1 8", "urandom True 1 9",
                         "tty True 5 0"]
    assert lines[6:12] == ["zero True", "urandom 16", "full ENOSPC", "pty True pts/ptmx", "ptys True", "shm 0o1777"]
    assert lines[12] == str(sorted(["null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "fd",
                                    "stdin", "stdout", "stderr"]))
    assert not Path("/dev/shm/x").exists()


# -- tmpfs size and mode ------------------------------------------------------------------------------

TMPFS_CHECK = ("import os, sys; s = os.statvfs(sys.argv[1]); "
               "print(s.f_blocks * s.f_frsize, oct(os.stat(sys.argv[1]).st_mode & 0o7777))")


@pytest.mark.parametrize(("entry", "value"), [
    ("cli", "{}:size=64M,mode=0700"), ("run", "{}:size=64M,mode=0700"), ("Job", "{}:mode=700,size=65536k"),
    ("run_async", ("{}", "size=64m,mode=0700")), ("create_process", ("{}", {"size": "64M", "mode": 0o700})),
    ("AsyncJob", ("{}", {"size": 64 << 20, "mode": "0700"})), ("Popen", "{}:size=64M,mode=0700"),
])
def test_tmpfs_size_and_mode_as_seen_inside(entry, value, tmp_path):
    top = tmp_path / "top"
    top.mkdir(mode=0o755)
    value = value.format(top) if isinstance(value, str) else (value[0].format(top), value[1])
    status, out, err = run_in(entry, {"tmpfs": [value]}, f"{sys.executable} -c '{TMPFS_CHECK}' {top}; "
                              f"grep ' {top} ' /proc/self/mountinfo")
    assert status == 0, err
    sizes, mountinfo = out.splitlines()
    assert sizes == f"{64 << 20} 0o700"
    assert "- tmpfs " in mountinfo and "size=65536k,mode=700" in mountinfo
    assert stat.S_IMODE(top.stat().st_mode) == 0o755  # the host's directory keeps its own mode


def test_a_tmpfs_without_options_keeps_the_directorys_mode(tmp_path):
    top = tmp_path / "top"
    top.mkdir()
    top.chmod(0o750)
    status, out, _ = run_in("run", {"tmpfs": [str(top)]}, f"stat -c %a {top}")
    assert (status, out) == (0, "750\n")


# -- overlay ------------------------------------------------------------------------------------------

@pytest.fixture
def read_only_tree(tmp_path):
    """A read-only file system on the host with a small tree in it; its content as a dict."""
    tree = tmp_path / "ro"
    tree.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "ro-tree", str(tree)], check=True)
    try:
        (tree / "etc").mkdir()
        (tree / "etc" / "conf").write_text("original")
        (tree / "gone").write_text("to delete")
        subprocess.run(["mount", "-o", "remount,ro", str(tree)], check=True)
        with pytest.raises(OSError):
            (tree / "etc" / "conf").write_text("changed")  # truly read-only
        yield tree
    finally:
        subprocess.run(["umount", str(tree)], check=True)


def tree_of(top: Path) -> dict[str, str]:
    return {str(p.relative_to(top)): (p.read_text() if p.is_file() else "/") for p in sorted(top.rglob("*"))}


WRITE_OVER = "echo changed > {d}/etc/conf && rm {d}/gone && mkdir -p {d}/new/dir && echo n > {d}/new/dir/f && " \
             "cat {d}/etc/conf {d}/new/dir/f && ls {d}"


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_job_writes_freely_over_a_read_only_tree_and_the_host_is_unchanged(entry, read_only_tree):
    before = tree_of(read_only_tree)
    mounts_before = host_mounts()
    status, out, err = run_in(entry, {"overlay": [f"{read_only_tree}:{read_only_tree}"]},
                              WRITE_OVER.format(d=read_only_tree))
    assert (status, out) == (0, "changed\nn\netc\nnew\n"), err
    assert tree_of(read_only_tree) == before and host_mounts() == mounts_before


@pytest.mark.parametrize(("entry", "step", "made"), [
    ("cli", ("dir", "{d}/link/new"), "new"), ("run", ("tmpfs", "{d}/link/new/deeper"), "new"),
    ("Job", ("bind", "/etc/hostname:{d}/link/file"), "file"), ("AsyncJob", ("symlink", "x:{d}/link/made"), "made"),
])
def test_nothing_is_made_through_a_link_that_leads_out_of_an_overlay(entry, step, made, tmp_path):
    """A mount point that may be made because it lies in an overlay of ours is never made through a symbolic
    link of the lower directory that leads to the host (it would stay there): one line, 125, the host unchanged."""
    lower, shown, host = tmp_path / "lower", tmp_path / "shown", tmp_path / "host"
    for directory in (lower, shown, host):
        directory.mkdir()
    (lower / "link").symlink_to(host)
    options = {"overlay": [f"{lower}:{shown}"], step[0]: [step[1].format(d=shown)]}
    status, _, err = run_in(entry, options, "true")
    assert status == 125 and f"{shown}/link is a symbolic link (to {host})" in one_line(err), err
    assert list(host.iterdir()) == []
    # With --mkdir the caller asks for it, as mkdir -p would do.
    status, _, err = run_in(entry, {**options, "mkdir": True}, "true")
    assert status == 0, err
    assert [p.name for p in host.iterdir()] == [made]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_path_below_a_link_of_ours_is_refused_and_the_path_it_leads_to_works(entry, tmp_path):
    """Made through --symlink's link, a path would land wherever the link leads; refused before anything
    starts, naming both. The path the link leads to is the way to say it."""
    top = tmp_path / "top"
    top.mkdir()
    options = {"tmpfs": [str(top)], "symlink": [f"{top}/real:{top}/link"], "dir": [f"{top}/link/sub"]}
    status, _, err = run_in(entry, options, f"touch {tmp_path}/ran")
    assert status == 2 and f"{top}/link/sub: lies below the link" in one_line(err), err
    assert f"{top}/real:{top}/link" in err and not (tmp_path / "ran").exists()
    status, out, err = run_in(entry, {**options, "dir": [f"{top}/real/sub"]}, f"cd {top}/link/sub && pwd -P")
    assert (status, out) == (0, f"{top}/real/sub\n"), err
    assert list(top.iterdir()) == []


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_path_of_more_parts_than_pythons_recursion_limit_is_made(entry, tmp_path):
    """1200 parts, 2400 bytes, well within PATH_MAX: made as the kernel allows (it was a RecursionError of
    os.makedirs in the reaper)."""
    deep = str(tmp_path) + "/d" * 1200
    status, out, err = run_in(entry, {"tmpfs": [str(tmp_path)], "dir": [deep]}, f"cd {deep} && echo made")
    assert (status, out) == (0, "made\n"), err[-300:]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("other", ["tmpfs", "dir", "bind", "read_only", "symlink"])
def test_a_path_that_is_also_a_link_of_ours_is_refused_naming_both(entry, other, tmp_path):
    """A link and a mount (or a directory, or another link) at one path: refused before anything starts, naming
    both (the link failed at set-up with 'something else exists there', naming only itself). The same link
    twice is one link."""
    top = tmp_path / "top"
    top.mkdir()
    link = f"{top}/link"
    value = {"tmpfs": link, "dir": link + "/", "bind": f"{tmp_path}:{top}//link", "read_only": link,
             "symlink": f"elsewhere:{link}"}[other]
    options = {"tmpfs": [str(top)], "symlink": [f"{top}/real:{link}"]}
    options[other] = [*options.get(other, []), value]
    status, _, err = run_in(entry, options, f"touch {tmp_path}/ran")
    assert status == 2 and not (tmp_path / "ran").exists(), err
    if other == "symlink":
        assert f"elsewhere:{link}: another link {top}/real:{link} is made at the same path" in one_line(err), err
    else:
        assert f"{link}: the link " in one_line(err) and f"{top}/real:{link} is made at the same path" in err, err
    twice = {"tmpfs": [str(top)], "symlink": [f"{top}/real:{link}", f"{top}/real:{link}"]}
    assert run_in(entry, twice, f"readlink {link}")[:2] == (0, f"{top}/real\n")


@pytest.mark.parametrize("entry", ["cli", "run", "Job", "create_process"])
@pytest.mark.parametrize("over_proc", [{"tmpfs": ["/proc"]}, {"bind": ["{d}/lower:/proc"]}], ids=["tmpfs", "bind"])
def test_dev_and_overlay_work_beside_a_mount_on_proc(entry, over_proc, tmp_path):
    """--dev and --overlay are made with our /proc's help: a mount that hides /proc is made after them."""
    (tmp_path / "lower").mkdir()
    (tmp_path / "lower" / "f").write_text("lower\n")
    (tmp_path / "shown").mkdir()
    options = {name: [value.format(d=tmp_path) for value in values] for name, values in over_proc.items()}
    options.update(overlay=[f"{tmp_path}/lower:{tmp_path}/shown"], dev=[f"{tmp_path}/shown/dev"])
    status, out, err = run_in(entry, options, f"cat {tmp_path}/shown/f; echo x > {tmp_path}/shown/dev/null; ls /proc")
    assert status == 0, err
    assert out.splitlines()[0] == "lower" and "self" not in out.split(), out


@pytest.mark.parametrize("entry", ["cli", "run", "Job", "AsyncJob"])
def test_no_proc_keeps_a_mount_on_proc(entry, tmp_path):
    """--no-proc takes our fresh /proc away before the mounts, so a --tmpfs or --bind on /proc is what the job
    sees there (not our /proc, shown again because the mount on top of it was the one taken away)."""
    (tmp_path / "shown").mkdir()
    (tmp_path / "shown" / "f").write_text("x")
    for over_proc, listed in (({"tmpfs": ["/proc"]}, ""), ({"bind": [f"{tmp_path}/shown:/proc"]}, "f\n")):
        status, out, err = run_in(entry, {"proc": False, **over_proc}, "ls /proc")
        assert (status, out) == (0, listed), err


def test_the_processes_killed_are_counted_under_a_tmpfs_on_proc(tmp_path):
    status_file = tmp_path / "status.jsonl"
    result = subprocess.run([CLI, "--json-status", str(status_file), "--tmpfs", "/proc", "--grace", "0.2", "--", "sh",
                             "-c", "trap '' TERM; sleep 60 & sleep 60 & exit 0"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    killed = [event for event in read_status(status_file) if event["event"] == "killed"]
    assert [event["count"] for event in killed] == [2]


def test_the_private_layer_vanishes_and_mountinfo_shows_the_overlay(tmp_path, read_only_tree):
    view = tmp_path / "view"
    view.mkdir()
    status, out, err = run_in("cli", {"overlay": [f"{read_only_tree}:{view}"]},
                              f"touch {view}/x && grep ' {view} ' /proc/self/mountinfo")
    assert status == 0, err
    assert out.splitlines()[-1].split(" - ")[1].startswith(f"overlay overlay rw,lowerdir={read_only_tree},")
    assert list(view.iterdir()) == []


@pytest.mark.parametrize("entry", ["cli", "run", "AsyncJob"])
def test_a_kept_upper_keeps_the_changes(entry, tmp_path, read_only_tree):
    before = tree_of(read_only_tree)
    view, upper = tmp_path / "view", tmp_path / "changes"
    view.mkdir()
    status, out, err = run_in(entry, {"overlay": [f"{read_only_tree}:{view}:{upper}"]}, WRITE_OVER.format(d=view))
    assert (status, out) == (0, "changed\nn\netc\nnew\n"), err
    assert tree_of(read_only_tree) == before
    assert (upper / "etc" / "conf").read_text() == "changed\n" and (upper / "new" / "dir" / "f").exists()
    assert stat.S_ISCHR((upper / "gone").lstat().st_mode)  # overlayfs's whiteout for the deleted file
    assert (tmp_path / ".changes.overlay-work").is_dir()  # its work directory, beside UPPER
    status, out, err = run_in(entry, {"overlay": [(str(read_only_tree), str(view), str(upper))]},
                              f"cat {view}/etc/conf; ls {view}")
    assert (status, out) == (0, "changed\netc\nnew\n"), err


def test_an_overlay_in_a_user_namespace_as_an_ordinary_user(nobody_dir):
    lower, view, upper = nobody_dir / "lower", nobody_dir / "view", nobody_dir / "upper"
    for directory in (lower, view):
        directory.mkdir()
    (lower / "f").write_text("lower")
    for path in (lower, lower / "f", view):
        os.chown(path, 65534, 65534)
    argv = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", CLI, "--overlay",
            f"{lower}:{view}:{upper}", "--", "sh", "-c", f"echo upper > {view}/f && cat {view}/f"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=nobody_dir)
    assert (result.returncode, result.stdout) == (0, "upper\n"), result.stderr
    assert (lower / "f").read_text() == "lower" and (upper / "f").read_text() == "upper\n"
    assert upper.stat().st_uid == 65534


def test_an_overlay_the_kernel_refuses_gets_one_clear_line(tmp_path, read_only_tree):
    # An overlay's writable layer cannot be on another overlay.
    outer, inner = tmp_path / "outer", tmp_path / "outer" / "inner"
    inner.mkdir(parents=True)
    status, _, err = run_in("cli", {"overlay": [f"{read_only_tree}:{outer}",
                                                f"{read_only_tree}:{inner}:{outer}/upper"]}, "true")
    assert status == 125
    assert "cannot mount an overlay of" in one_line(err) and "overlayfs can write to" in err


# -- colons in paths ----------------------------------------------------------------------------------

@pytest.mark.parametrize("entry", ["cli", "run", "Job"])
def test_colons_in_paths_are_escaped_or_given_as_tuples(entry, tmp_path):
    source = tmp_path / "a:b"
    source.mkdir()
    (source / "f").write_text("colon")
    top = tmp_path / "t:x"
    top.mkdir()
    esc = {str(p): str(p).replace(":", "\\:") for p in (source, top)}
    options = {"tmpfs": [f"{esc[str(top)]}:size=1M"], "bind": [f"{esc[str(source)]}:{esc[str(top)]}/in\\:side"],
               "ro_bind": [f"{esc[str(source)]}/f:{esc[str(top)]}/ro\\:f"],
               "symlink": [f"{esc[str(source)]}/f:{esc[str(top)]}/li\\:nk"],
               "overlay": [f"{esc[str(source)]}:{esc[str(top)]}/over\\:lay"]}
    if entry == "Job":  # the API's tuples need no escapes
        options = {"tmpfs": [(str(top), "size=1M")], "bind": [(str(source), f"{top}/in:side")],
                   "ro_bind": [(f"{source}/f", f"{top}/ro:f")], "symlink": [(f"{source}/f", f"{top}/li:nk")],
                   "overlay": [(str(source), f"{top}/over:lay")]}
    status, out, err = run_in(entry, options, f"cat '{top}/in:side/f' '{top}/ro:f' '{top}/li:nk' "
                              f"'{top}/over:lay/f'; readlink '{top}/li:nk'; grep -c ' {top} .*size=1024k' "
                              "/proc/self/mountinfo")
    assert (status, out) == (0, f"colon{'colon' * 3}{source}/f\n1\n"), err


def test_a_backslash_before_a_backslash_is_one_backslash(tmp_path):
    odd = tmp_path / "back\\slash:"
    odd.mkdir()
    (odd / "f").write_text("odd")
    top = tmp_path / "top"
    top.mkdir()
    escaped = str(odd).replace("\\", "\\\\").replace(":", "\\:")
    status, out, err = run_in("cli", {"bind": [f"{escaped}:{top}"]}, f"cat {top}/f")
    assert (status, out) == (0, "odd"), err


# -- refusals: one line, before anything starts -------------------------------------------------------

@pytest.mark.parametrize(("argv", "words"), [
    (["--bind", "/a:/b:/c"], "too many ':'"), (["--symlink", "/etc"], "TARGET:PATH"),
    (["--symlink", "x:relative"], "absolute"), (["--overlay", "/usr"], "LOWER:DIR"),
    (["--overlay", "/usr:/mnt:/usr/upper"], "UPPER must lie outside"), (["--tmpfs", "/mnt:size=lots"], "not a size"),
    (["--tmpfs", "/mnt:mode=0999"], "octal"), (["--tmpfs", "/mnt:uid=0"], "unknown tmpfs option 'uid'"),
    (["--tmpfs", "/mnt:size"], "KEY=VALUE"), (["--dev", "/"], "cannot mount over /"),
    (["--overlay", "/usr:/"], "cannot mount over /"), (["--dev", "dev"], "absolute"),
    (["--dev", "/proc"], "--dev /proc: cannot be made over /proc"),
    (["--overlay", "/usr:/proc"], "--overlay /proc: cannot be made over /proc"),
    # A size past 64 bits would wrap around in the kernel.
    (["--tmpfs", "/mnt:size=99999999999999999999999"], "size 99999999999999999999999 is too large"),
    (["--tmpfs", "/mnt:size=8E"], "size 8E is too large"),
])
def test_bad_mount_values_get_one_line_and_status_2(argv, words, tmp_path):
    result = subprocess.run([CLI, *argv, "--", "touch", str(tmp_path / "ran")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and words in one_line(result.stderr), result.stderr
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize(("kwargs", "error", "words"), [
    ({"bind": ["/a:/b:/c"]}, ValueError, "bind /a:/b:/c: too many"), ({"symlink": [("x",)]}, ValueError, "symlink"),
    ({"overlay": [("/usr", "/mnt", "/usr/x")]}, ValueError, "overlay"), ({"tmpfs": [("/mnt", 7)]}, ValueError, "tmpfs"),
    ({"tmpfs": [("/mnt", {"mode": 0o10000})]}, ValueError, "tmpfs"), ({"dev": "/dev"}, ValueError, "dev"),
    ({"mkdir": "yes"}, ValueError, "mkdir"),
    ({"tmpfs": [("/mnt", {"size": 2**70})]}, ValueError, "tmpfs /mnt: size 1180591620717411303424 is too large"),
])
def test_bad_mount_values_in_the_api_name_the_keyword(kwargs, error, words):
    with pytest.raises(error, match=words):
        sandbox.run(["true"], **kwargs)


@pytest.mark.parametrize("entry", ["cli", "run"])
def test_host_problems_get_one_line_and_status_125(entry, tmp_path, read_only_tree):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cases = [
        ({"bind": [f"{tmp_path}/nope:{tmp_path}"]}, f"{tmp_path}/nope does not exist"),
        ({"tmpfs": [str(a_file)]}, "is not a directory"),
        ({"overlay": [f"{a_file}:{tmp_path}"]}, "is not a directory"),
        ({"symlink": [f"/etc:{a_file}"]}, "exists and is not that link"),
        ({"ro_bind": [f"{tmp_path}:/mnt"], "bind": [f"{tmp_path}:/mnt/new"], "mkdir": True}, "read-only bind"),
        # made inside, after the read-only bind: the kernel's EROFS, translated
        ({"bind": [f"{read_only_tree}:/mnt", f"{tmp_path}:/mnt/new"], "mkdir": True},
         "cannot create the mount point /mnt/new: the file system there is read-only"),
    ]
    for options, words in cases:
        status, _, err = run_in(entry, options, "true")
        assert status == 125 and words in one_line(err), (options, err)


TRANSLATE = """
import sys
from sandboxed_run_helpers.shared import linux
from sandboxed_run_helpers.shared.errors import mount_error
kind, userns, fstype = sys.argv[1], sys.argv[2] == "1", sys.argv[3].encode()
if fstype != b"tmpfs":
    linux.unshare(linux.CLONE_NEWNS)  # nothing could reach the host, should the mount work after all
try:
    linux.mount(fstype, sys.argv[4].encode(), fstype, 0)
except OSError as exc:
    print(exc.errno, mount_error(exc, "mount it on", sys.argv[4], userns, kind))
"""


@pytest.mark.parametrize(("prefix", "kind", "userns", "fstype", "words"), [
    # The kernel's own refusals, made in a throwaway process, and what the user reads.
    (["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"], "overlay", "1", "tmpfs",
     "a user namespace may not mount overlayfs here"),
    (["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"], "bind", "1", "tmpfs",
     "the host locked this mount's flags"),
    (["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"], "tmpfs", "0", "tmpfs",
     "operation not permitted (run as root"),
    ([], "overlay", "0", "no-such-fs", "this kernel has no overlay file system (load its module: modprobe overlay)"),
])
@pytest.mark.root("mounts as root, and as nobody")
def test_the_kernels_mount_errors_are_translated(prefix, kind, userns, fstype, words):
    result = subprocess.run([*prefix, sys.executable, "-c", TRANSLATE, kind, userns, fstype, "/mnt"],
                            capture_output=True, text=True, timeout=60, cwd="/")
    assert result.returncode == 0, result.stderr
    number, _, message = result.stdout.strip().partition(" ")
    assert message.startswith("cannot mount it on /mnt: ") and words in message, result.stdout
    assert int(number) in (1, 19)  # EPERM, ENODEV: really the kernel's
