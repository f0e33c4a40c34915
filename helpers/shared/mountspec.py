"""The mounts a sandbox asks for: how their values are written and checked, the one ordered list of set-up
steps the reaper walks, and the check of that list against the host before anything starts.

Values with several fields (--tmpfs DIR:OPTS, --bind SRC:DST, --ro-bind, --symlink TARGET:PATH,
--overlay LOWER:DIR:UPPER, and the same strings in the API) are split on ":"; a colon that is part of a
path is written "\\:" and a backslash before a colon or a backslash "\\\\". Options that take one path
(--dir, --dev, --read-only) take it as written. The API also takes tuples, which need no escapes.

Steps are ordered parents first (by the depth of their path), and at one depth a read-only remount before
the mounts, which then open writable holes in it. A path a step needs that does not exist is created
right after the mount it lies in (its "owner": the deepest earlier mount above it) is made: freely in a
tmpfs of ours (--tmpfs, --dev, or the writable layer of an --overlay), where it vanishes with the
sandbox; on the host's own file systems, or in a bound host directory, only with --mkdir (it stays).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Mapping

from .errors import SandboxError
from .records import Record

TYPE_CHECKING = False  # typing stays out of the spawn server, whose every reaper is a fork of it
if TYPE_CHECKING:
    from typing import Any

MOUNTS = ("tmpfs", "overlay", "dev", "bind", "ro_bind", "proc")  # the steps that mount something
OURS = ("tmpfs", "overlay", "dev")  # mounts whose content is ours to create in (private to the sandbox)
DIRECTORIES = ("tmpfs", "overlay", "dev", "dir", "proc")  # steps whose path is a directory
# The extra of the steps --root adds by itself (its /proc, and its /dev unless a mount of the user's is there).
FOR_ROOT = "root"
ESCAPES = "write \\: for a colon that is part of a path"


# -- values ------------------------------------------------------------------------------------------

def split_fields(text: str, name: str, most: int) -> list[str]:
    """text split on the colons that are not escaped ("\\:" is a colon, "\\\\" a backslash); at most `most`."""
    fields, field, i = [], [], 0
    while i < len(text):
        char = text[i]
        if char == "\\" and text[i + 1:i + 2] in (":", "\\"):
            field.append(text[i + 1])
            i += 2
            continue
        if char == ":":
            fields.append("".join(field))
            field = []
        else:
            field.append(char)
        i += 1
    fields.append("".join(field))
    if len(fields) > most:
        raise ValueError(f"{name} {text}: too many ':' ({ESCAPES})")
    return fields


def absolute_path(value: object, name: str) -> str:
    """An absolute path without "..", normalised ("//", "." and a trailing "/" go); ValueError naming the option
    otherwise. ".." is refused, not normalised away: the kernel takes it after following the link before it
    (/x/link/.. is the parent of where link leads), which the host's view, here, cannot tell for paths inside."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} needs a path, not {value!r}")
    if "\0" in value:
        raise ValueError(f"{name} {value!r}: a path cannot contain a NUL byte")
    if not value.startswith("/"):
        raise ValueError(f"{name} {value}: the path must be absolute")
    if ".." in value.split("/"):
        raise ValueError(f"{name} {value}: write the path without '..': the kernel takes '..' after following "
                         "the links before it, so it need not mean the parent of what is written")
    # normpath keeps a leading "//" (POSIX leaves its meaning open); Linux takes it as "/".
    return "/" + os.path.normpath(str.__str__(value)).lstrip("/")


# /proc's links to the process that looks: the sandbox's PID 1 makes the mounts, so through them a mount
# would land in PID 1's own /proc/1, which the job's processes never see as theirs.
PROC_SELF = {"/proc/self": "", "/proc/thread-self": "", "/proc/mounts": "a link to /proc/self/mounts",
             "/proc/net": "a link to /proc/self/net"}


def proc_self_problem(path: str) -> str | None:
    """Why a normalised mount target cannot be made where the job would look (None: it can)."""
    for link, what in PROC_SELF.items():
        if _within(path, link):
            shown = f"{link} is {what}, which" if what else f"{link}"
            return (f"{shown} names the process that looks; the sandbox's PID 1 makes the mounts, so it would land "
                    "on PID 1's /proc/1, not on the job's processes")
    return None


def _fields(value: object, name: str, least: int, most: int, form: str) -> list[object]:
    """A value's fields: a string split on its colons, or a tuple as it is."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        fields: list[object] = list(split_fields(value, name, most))
    elif isinstance(value, tuple):
        fields = list(value)
    else:
        raise ValueError(f"{name} takes {form}, not {value!r}")
    if not least <= len(fields) <= most:
        raise ValueError(f"{name} takes {form}, not {value!r}")
    return fields


def bind_value(value: object, name: str) -> tuple[str, str]:
    """SRC[:DST] or a (src, dst) pair, as (source, target)."""
    fields = _fields(value, name, 1, 2, "SRC[:DST] or a (src, dst) pair")
    source = absolute_path(fields[0], name)
    return source, absolute_path(fields[1], name) if len(fields) == 2 else source


def symlink_value(value: object, name: str) -> tuple[str, str]:
    """TARGET:PATH or a (target, path) pair: a link at PATH (absolute) to TARGET (any text, as ln -s takes it)."""
    target, path = _fields(value, name, 2, 2, "TARGET:PATH or a (target, path) pair")
    if isinstance(target, os.PathLike):
        target = os.fspath(target)
    if not isinstance(target, str) or not target or "\0" in target:
        raise ValueError(f"{name}: the link's target must be a non-empty text, not {target!r}")
    return str.__str__(target), absolute_path(path, name)


def overlay_value(value: object, name: str) -> tuple[str, str, str | None]:
    """LOWER:DIR[:UPPER] or a tuple of them: DIR shows LOWER, writable; changes go to UPPER (kept), or with
    no UPPER to a private tmpfs."""
    fields = _fields(value, name, 2, 3, "LOWER:DIR[:UPPER] or a (lower, dir[, upper]) tuple")
    lower, target = absolute_path(fields[0], name), absolute_path(fields[1], name)
    upper = absolute_path(fields[2], name) if len(fields) == 3 and fields[2] is not None else None
    if upper is not None and (upper == "/" or _within(upper, lower) or _within(lower, upper)
                              or _within(upper, target) or _within(target, upper)):
        raise ValueError(f"{name} {lower}:{target}:{upper}: UPPER must lie outside LOWER and DIR (and they "
                         "outside it)")
    return lower, target, upper


_SIZE = r"\d+[kKmMgGtTpPeE]?|\d{1,3}%"  # compiled on first use
_SHIFTS = {"k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}  # powers of 1024, as the kernel's memparse reads them


def tmpfs_value(value: object, name: str) -> tuple[str, str | None, int | None]:
    """DIR[:size=SIZE,mode=MODE] or (dir, options) with options as that text or a mapping: (path, size, mode).
    SIZE is what tmpfs takes (bytes, with k, m, g... or a % of memory), MODE octal."""
    fields = _fields(value, name, 1, 2, "DIR[:size=SIZE,mode=MODE] or a (dir, options) pair")
    path = absolute_path(fields[0], name)
    options: object = fields[1] if len(fields) == 2 else {}
    if isinstance(options, str):
        pairs = {}
        for item in filter(None, options.split(",")):
            key, sep, text = item.partition("=")
            if not sep:
                raise ValueError(f"{name} {path}: {item!r} is not KEY=VALUE (size=64M,mode=0700; {ESCAPES})")
            pairs[key] = text
        options = pairs
    if not isinstance(options, Mapping):
        raise ValueError(f"{name} {path}: the options must be text (size=64M,mode=0700) or a mapping")
    unknown = set(options) - {"size", "mode"}
    if unknown:
        raise ValueError(f"{name} {path}: unknown tmpfs option {sorted(unknown)[0]!r}: size and mode are known "
                         f"(size=64M,mode=0700; {ESCAPES})")
    size, mode = options.get("size"), options.get("mode")
    if size is not None:
        if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
            size = str(size)
        if not isinstance(size, str) or not re.fullmatch(_SIZE, size, re.ASCII):
            raise ValueError(f"{name} {path}: size {size!r} is not a size: bytes with an optional k, m or g "
                             "(64M), or a share of memory (50%)")
        if int(size.rstrip("%kKmMgGtTpPeE")) << 10 * _SHIFTS.get(size[-1].lower(), 0) >= 1 << 63:
            raise ValueError(f"{name} {path}: size {size} is too large (the most is 8E)")
    if mode is not None:
        if isinstance(mode, str) and re.fullmatch(r"[0-7]{1,4}", mode):
            mode = int(mode, 8)
        if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
            raise ValueError(f"{name} {path}: mode {mode!r} is not an octal mode (0700, 1777)")
    return path, size, mode


# -- the steps ---------------------------------------------------------------------------------------

class Step(Record):
    """One set-up step: kind is the option that asked for it (tmpfs, bind, ro_bind, overlay, dev, dir, symlink,
    read_only; proc: --root's fresh /proc), target the path it makes or mounts on. source: a bind's source, an
    overlay's lower directory, a link's target. extra: (size, mode) of a tmpfs; an overlay's UPPER (None: a
    private tmpfs); FOR_ROOT for what --root adds by itself."""

    kind: str
    target: str
    source: str | None = None
    extra: Any = None

    def describe(self, spelling: str = "cli") -> str:
        if self.extra == FOR_ROOT:
            return f"{'--root' if spelling == 'cli' else 'root'} (its {self.target})"
        flag = "--" + self.kind.replace("_", "-") if spelling == "cli" else self.kind
        if self.kind == "overlay":
            return f"{flag} {self.source}:{self.target}" + (f":{self.extra}" if self.extra else "")
        return f"{flag} {self.source + ':' if self.source else ''}{self.target}"


def steps_of(tmpfs: Iterable[tuple], bind: Iterable[tuple], ro_bind: Iterable[tuple], overlay: Iterable[tuple],
             dev: Iterable[str], dirs: Iterable[str], symlink: Iterable[tuple],
             read_only: Iterable[str], root: bool = False) -> tuple[Step, ...]:
    """Every step, in the order the reaper takes them (see the module's docstring). root: the targets lie in a
    new root (--root), which gets a fresh /proc, and a minimal /dev unless a mount of the caller's is there;
    both come first at their depth, so that the caller's steps on the same path apply to them."""
    steps = [Step("tmpfs", path, None, (size, mode)) for path, size, mode in tmpfs]
    steps += [Step("overlay", target, lower, upper) for lower, target, upper in overlay]
    steps += [Step("dev", path) for path in dev]
    steps += [Step("bind", target, source) for source, target in bind]
    steps += [Step("ro_bind", target, source) for source, target in ro_bind]
    steps += [Step("read_only", path) for path in read_only]
    steps += [Step("dir", path) for path in dirs]
    steps += [Step("symlink", path, target) for target, path in symlink]
    if root:
        steps.append(Step("proc", "/proc", None, FOR_ROOT))
        if not any(m.kind in MOUNTS and m.target == "/dev" for m in steps):
            steps.append(Step("dev", "/dev", None, FOR_ROOT))
    rank = {"read_only": 0, "dir": 2, "symlink": 2}
    # What lies in /proc comes last: --dev and --overlay need our /proc (its /proc/self/fd) while they are
    # made, and a mount on /proc would hide it.
    steps.sort(key=lambda m: (_within(m.target, "/proc"), m.target.rstrip("/").count("/"),
                              -1 if m.extra == FOR_ROOT else rank.get(m.kind, 1)))
    return tuple(steps)


def _within(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def owner(steps: tuple[Step, ...], index: int) -> Step | None:
    """The mount an earlier step made that steps[index]'s path lies in (the deepest; None: the host's own)."""
    found = None
    for step in steps[:index]:
        if step.kind in MOUNTS and _within(steps[index].target, step.target):
            found = step
    return found


def may_create(step_owner: Step | None, mkdir: bool) -> bool:
    """Whether a missing path below step_owner may be created: in a tmpfs of ours always, elsewhere with mkdir."""
    return mkdir or (step_owner is not None and step_owner.kind in OURS)


def missing_advice(path: str, kind: str, spelling: str | None = None) -> str:
    """What to do about a missing path that we may not create (spelling None: both front ends' words)."""
    if spelling == "cli":
        how = "put it below a --tmpfs, or add --mkdir to create it on the host"
    elif spelling == "api":
        how = "put it below a tmpfs, or pass mkdir=True to create it on the host"
    else:
        how = "put it below a tmpfs of the sandbox, or ask for it to be created on the host (--mkdir, mkdir=True)"
    if kind in ("dir", "symlink"):
        return f"{path} would be made on the host's file system, where it would stay: {how}"
    return f"{path} does not exist: create it, {how}"


def in_root(root: str | None, path: str) -> str:
    """Where a path of the sandbox lies as the host sees it: below root (--root; None: the host's own /)."""
    if root is None:
        return path
    return root if path == "/" else root.rstrip("/") + path


def check_host(steps: tuple[Step, ...], mkdir: bool, spelling: str, root: str | None = None) -> None:
    """Check the steps against this machine (SandboxError, one line each), so a typo fails before anything
    starts: sources exist, and each path exists as the right kind, or will be created. root: the new root the
    targets lie in (--root; the sources are the host's)."""
    for index, step in enumerate(steps):
        described = step.describe(spelling)
        if step.kind in ("bind", "ro_bind", "overlay"):
            source = _stat(step.source, described)
            if step.kind == "overlay" and not stat.S_ISDIR(source.st_mode):
                raise SandboxError(f"{described}: {step.source} is not a directory")
        if step.kind == "overlay" and step.extra is not None:
            parent = os.path.dirname(step.extra)
            if not os.path.isdir(parent):
                raise SandboxError(f"{described}: {parent} (where UPPER and its work directory go) is not a "
                                   "directory")
            if os.path.lexists(step.extra) and not os.path.isdir(step.extra):
                raise SandboxError(f"{described}: {step.extra} is not a directory")
        above = owner(steps, index)
        if above is not None and above.kind in OURS:
            continue  # made or shown by us inside: nothing of the host's to check
        if above is not None and above.kind == "proc":
            host_path = step.target  # the host's /proc shows what a fresh one will
        elif above is not None:  # in a bound directory: the path lies in its source on the host
            assert above.source is not None
            host_path = above.source + step.target[len(above.target):]
        else:
            host_path = in_root(root, step.target)
        if not os.path.lexists(host_path):
            if step.kind == "read_only" or not may_create(above, mkdir):
                shown = host_path if root is not None and above is None else step.target
                raise SandboxError(f"{described}: {missing_advice(shown, step.kind, spelling)}")
            if above is not None and above.kind == "ro_bind":
                raise SandboxError(f"{described}: {step.target} does not exist in the read-only bind of "
                                   f"{above.source}: create {host_path} on the host")
            continue
        _check_kind(step, host_path, described, mkdir)


def _check_kind(step: Step, path: str, described: str, mkdir: bool) -> None:
    if step.kind == "symlink":
        if not (os.path.islink(path) and os.readlink(path) == step.source):
            raise SandboxError(f"{described}: {step.target} exists and is not that link")
        return
    if step.kind == "read_only":
        _stat(path, described)
        return
    target = _stat(path, described)
    if step.kind in DIRECTORIES:
        if not stat.S_ISDIR(target.st_mode):
            raise SandboxError(f"{described}: {step.target} is not a directory")
        return
    assert step.source is not None
    source = os.stat(step.source)
    if stat.S_ISDIR(source.st_mode) != stat.S_ISDIR(target.st_mode):
        kinds = ("a directory" if stat.S_ISDIR(source.st_mode) else "a file",
                 "a directory" if stat.S_ISDIR(target.st_mode) else "a file")
        raise SandboxError(f"{described}: cannot bind {kinds[0]} over {kinds[1]}")


def _stat(path: str | None, described: str) -> os.stat_result:
    assert path is not None
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise SandboxError(f"{described}: {path} does not exist") from None
    except OSError as exc:
        raise SandboxError(f"{described}: {path}: {exc.strerror}") from None
