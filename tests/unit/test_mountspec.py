"""How mount values are written and read (helpers/shared/mountspec.py), and the order of the set-up steps, as
pure logic: the end-to-end tests (test_mount_options.py) show what the kernel makes of them."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from sandboxed_run_helpers.shared.mountspec import (
    Step,
    absolute_path,
    bind_value,
    may_create,
    overlay_value,
    owner,
    proc_self_problem,
    split_fields,
    steps_of,
    symlink_value,
    tmpfs_value,
)


@pytest.mark.parametrize(("text", "fields"), [
    ("/a", ["/a"]), ("/a:/b", ["/a", "/b"]), ("/a\\:b:/c", ["/a:b", "/c"]), ("/a\\\\:/b", ["/a\\", "/b"]),
    ("/a\\b", ["/a\\b"]), ("/a\\\\\\:b", ["/a\\:b"]), (":", ["", ""]), ("", [""]), ("/a\\", ["/a\\"]),
])
def test_colons_split_unless_escaped(text, fields):
    assert split_fields(text, "--bind", 2) == fields


def test_too_many_fields_name_the_option_and_the_escape():
    with pytest.raises(ValueError, match=r"--bind /a:/b:/c: too many ':' \(write \\: for a colon"):
        split_fields("/a:/b:/c", "--bind", 2)


@pytest.mark.parametrize(("value", "path"), [
    ("/", "/"), ("//x", "/x"), ("/x/./y/", "/x/y"), ("/x//y", "/x/y"), (PurePosixPath("/p"), "/p"),
    ("/caf\u00e9 x", "/caf\u00e9 x"),
])
def test_paths_are_normalised(value, path):
    assert absolute_path(value, "--dir") == path


@pytest.mark.parametrize(("value", "words"), [
    ("x", "must be absolute"), ("", "needs a path"), (None, "needs a path"), (3, "needs a path"),
    ("/a/../b", "without '..'"), ("/a\0b", "NUL"),
])
def test_what_is_not_an_absolute_path(value, words):
    with pytest.raises(ValueError, match=words) as raised:
        absolute_path(value, "--dir")
    assert str(raised.value).startswith("--dir")


@pytest.mark.parametrize(("value", "result"), [
    ("/mnt", ("/mnt", None, None)), ("/mnt:size=64M,mode=0700", ("/mnt", "64M", 0o700)),
    ("/mnt:mode=1777", ("/mnt", None, 0o1777)), ("/mnt:size=50%", ("/mnt", "50%", None)),
    ("/mnt:", ("/mnt", None, None)), ("/a\\:b:size=1k", ("/a:b", "1k", None)),
    (("/mnt", {"size": 1024, "mode": 0o755}), ("/mnt", "1024", 0o755)), (("/mnt", "size=7E"), ("/mnt", "7E", None)),
])
def test_tmpfs_values(value, result):
    assert tmpfs_value(value, "--tmpfs") == result


@pytest.mark.parametrize(("value", "words"), [
    ("/mnt:size", "'size' is not KEY=VALUE"), ("/mnt:uid=0", "unknown tmpfs option 'uid'"),
    ("/mnt:size=64X", "size '64X' is not a size"), ("/mnt:size=-1", "is not a size"),
    ("/mnt:size=9E", "too large"), ("/mnt:mode=0800", "is not an octal mode"), ("/mnt:mode=17777", "octal mode"),
    (("/mnt", {"mode": 0o10000}), "octal mode"), (("/mnt", {"size": True}), "is not a size"),
    (("/mnt", 5), "the options must be text"), ("mnt", "must be absolute"), (["/mnt"], "takes DIR"),
    ("/a:/b:c", "too many ':'"),
])
def test_bad_tmpfs_values(value, words):
    with pytest.raises(ValueError, match=words):
        tmpfs_value(value, "--tmpfs")


@pytest.mark.parametrize(("value", "result"), [
    ("/src", ("/src", "/src")), ("/src:/dst", ("/src", "/dst")), (("/a:b", "/c"), ("/a:b", "/c")),
    ("/a\\:b:/c", ("/a:b", "/c")),
])
def test_bind_values(value, result):
    assert bind_value(value, "--bind") == result


@pytest.mark.parametrize(("value", "result"), [
    ("/lower:/dir", ("/lower", "/dir", None)), ("/lower:/dir:/upper", ("/lower", "/dir", "/upper")),
    (("/lower", "/dir", None), ("/lower", "/dir", None)),
])
def test_overlay_values(value, result):
    assert overlay_value(value, "--overlay") == result


@pytest.mark.parametrize("value", ["/l:/d:/", "/l:/d:/l/u", "/l/x:/d:/l", "/l:/d:/d/u", "/l:/d/x:/d", "/l"])
def test_an_overlays_upper_lies_outside_lower_and_dir(value):
    with pytest.raises(ValueError, match="--overlay"):
        overlay_value(value, "--overlay")


def test_symlink_values():
    assert symlink_value("../x:/a/link", "--symlink") == ("../x", "/a/link")
    assert symlink_value(("a:b", "/l"), "--symlink") == ("a:b", "/l")
    for bad in (":/l", ("", "/l"), ("x\0", "/l"), "x:l"):
        with pytest.raises(ValueError, match="--symlink"):
            symlink_value(bad, "--symlink")


@pytest.mark.parametrize("path", ["/proc/self", "/proc/self/x", "/proc/thread-self/y", "/proc/mounts", "/proc/net/x"])
def test_a_path_through_procs_own_links_is_refused(path):
    assert "names the process that looks" in proc_self_problem(path)


@pytest.mark.parametrize("path", ["/proc", "/proc/sys", "/proc/selfish", "/x/proc/self"])
def test_other_paths_in_proc_are_fine(path):
    assert proc_self_problem(path) is None


def kinds(steps) -> list[tuple[str, str]]:
    return [(step.kind, step.target) for step in steps]


def test_steps_go_parents_first_read_only_first_links_and_dirs_last_and_proc_at_the_end():
    steps = steps_of(tmpfs=[("/a/b", None, None), ("/proc/sys", None, None), ("/a", None, None)],
                     bind=[("/src", "/a/b/c")], ro_bind=[("/ro", "/z")], overlay=[("/l", "/o", None)],
                     dev=["/dev"], dirs=["/a/d"], symlink=[("t", "/s")], read_only=["/", "/a"])
    assert kinds(steps) == [
        ("read_only", "/"),
        ("read_only", "/a"), ("tmpfs", "/a"), ("overlay", "/o"), ("dev", "/dev"), ("ro_bind", "/z"), ("symlink", "/s"),
        ("tmpfs", "/a/b"), ("dir", "/a/d"),
        ("bind", "/a/b/c"),
        ("tmpfs", "/proc/sys"),
    ]


def test_the_owner_of_a_step_is_the_deepest_earlier_mount_above_it():
    steps = (Step("tmpfs", "/a"), Step("bind", "/a/b", "/src"), Step("read_only", "/a/b"), Step("dir", "/a/b/c"),
             Step("dir", "/x"))
    assert owner(steps, 3) == steps[1]
    assert owner(steps, 1) == steps[0]
    assert owner(steps, 4) is None and owner(steps, 0) is None


def test_a_missing_path_is_made_freely_only_in_a_tmpfs_of_ours():
    assert may_create(Step("tmpfs", "/a"), mkdir=False)
    assert may_create(Step("overlay", "/a", "/l"), mkdir=False)
    assert may_create(Step("dev", "/dev"), mkdir=False)
    assert not may_create(Step("bind", "/a", "/src"), mkdir=False)
    assert not may_create(None, mkdir=False)
    assert may_create(None, mkdir=True) and may_create(Step("bind", "/a", "/src"), mkdir=True)
