"""The pure description of a sandbox: what to mount, how to stop it. Validated before anything starts."""

from __future__ import annotations

import math
import os
import signal
import stat
from collections.abc import Iterable
from typing import NamedTuple

from .errors import SandboxError
from .signals import parse_signal

PROPAGATIONS = ("slave", "private")
DEFAULT_GRACE = 10.0
NET_MODES = ("host", "none", "netns:NAME")
NETNS_DIR = "/run/netns"
MAX_ID = 2**32 - 2  # (uid_t)-1 means "no change" to the kernel


# NamedTuples rather than dataclasses: immutable all the same, and no code generated at import,
# which the command-line tool would pay for on every run.
class Mount(NamedTuple):
    """One mount made inside the sandbox, in order: kind is 'read-only', 'tmpfs', 'bind' or 'ro-bind'."""

    kind: str
    target: str
    source: str | None = None

    def describe(self) -> str:
        return f"--{self.kind} {self.source + ':' if self.source else ''}{self.target}"


class SandboxSpec(NamedTuple):
    grace: float = DEFAULT_GRACE
    stop_signal: int = signal.SIGTERM
    mounts: tuple[Mount, ...] = ()
    propagation: str = "slave"
    ignored_signals: tuple[int, ...] = ()
    # Isolation: the network ("host", "none" or "netns:NAME"), a user namespace (the uid and gid the
    # caller becomes inside, or None), a new UTS namespace's hostname, and whether /proc is fresh.
    net: str = "host"
    userns: tuple[int, int] | None = None
    hostname: str | None = None
    proc: bool = True

    @classmethod
    def build(
        cls,
        *,
        grace: float | int = DEFAULT_GRACE,
        stop_signal: int | str = signal.SIGTERM,
        tmpfs: Iterable[str] = (),
        binds: Iterable[str | tuple[str, str]] = (),
        ro_binds: Iterable[str | tuple[str, str]] = (),
        propagation: str = "slave",
        ignored_signals: Iterable[int] = (),
        net: str = "host",
        userns: bool | None = None,
        uid: int | None = None,
        gid: int | None = None,
        read_only: Iterable[str] = (),
        hostname: str | None = None,
        proc: bool = True,
    ) -> SandboxSpec:
        """Check every value on its own (ValueError, TypeError); check_host() then checks them against the machine."""
        grace = duration(grace, "grace")
        try:
            stop = parse_signal(stop_signal)
        except ValueError:
            raise ValueError(f"unknown stop signal {stop_signal!r}") from None
        except TypeError:
            raise TypeError(f"stop_signal must be a signal name or number, not {stop_signal!r}") from None
        if stop == signal.SIGSTOP:
            raise ValueError("the stop signal cannot be SIGSTOP: it does not end a process")
        if propagation not in PROPAGATIONS:
            raise ValueError(f"propagation must be one of {', '.join(PROPAGATIONS)}, not {propagation!r}")
        if isinstance(tmpfs, (str, bytes)) or isinstance(binds, (str, bytes)) or isinstance(ro_binds, (str, bytes)):
            raise ValueError("tmpfs, binds and ro_binds take a list of paths, not a single string")
        mounts = [Mount("tmpfs", _absolute(path, "--tmpfs")) for path in tmpfs]
        mounts += [_bind("bind", item) for item in binds]
        mounts += [_bind("ro-bind", item) for item in ro_binds]
        if isinstance(read_only, (str, bytes)):
            raise ValueError("read_only takes a list of paths, not a single string")
        mounts += [Mount("read-only", _absolute(path, "--read-only")) for path in read_only]
        for m in mounts:
            if m.target == "/" and m.kind != "read-only":
                # It would not replace the root the job sees (its processes keep the old one), and the
                # job would write to the host's real / while looking at an empty tmpfs or a bind.
                raise ValueError(f"{m.describe()}: cannot mount over /; mount on the directories the job needs "
                                 "(with --read-only / to keep the rest unchanged)")
        # Parents before children, so that a bind below a tmpfs lands on top of it; at one depth a
        # read-only remount comes first, so that a mount on the same path opens a writable hole in it.
        mounts.sort(key=lambda m: (m.target.rstrip("/").count("/"), m.kind != "read-only"))
        return cls(float(grace), stop, tuple(mounts), propagation, tuple(sorted({int(s) for s in ignored_signals})),
                   _net(net), _userns(userns, uid, gid), _hostname(hostname), _flag(proc, "proc"))

    def check_host(self) -> None:
        """Check the paths as the host sees them (SandboxError), so a typo fails before anything starts."""
        self.check_isolation()
        for m in self.mounts:
            target = _stat(m.target, m)
            if m.kind == "read-only":
                continue
            if m.kind == "tmpfs":
                if not stat.S_ISDIR(target.st_mode):
                    raise SandboxError(f"{m.describe()}: {m.target} is not a directory")
                continue
            assert m.source is not None
            source = _stat(m.source, m)
            if stat.S_ISDIR(source.st_mode) != stat.S_ISDIR(target.st_mode):
                kinds = ("a directory" if stat.S_ISDIR(source.st_mode) else "a file",
                         "a directory" if stat.S_ISDIR(target.st_mode) else "a file")
                raise SandboxError(f"{m.describe()}: cannot bind {kinds[0]} over {kinds[1]}")

    def check_isolation(self) -> None:
        """The named network namespace exists; user namespaces are allowed (SandboxError, one line each)."""
        if self.net.startswith("netns:"):
            name = self.net[len("netns:"):]
            if not os.path.exists(os.path.join(NETNS_DIR, name)):
                raise SandboxError(f"--net {self.net}: no network namespace {name!r} "
                                   f"(no {NETNS_DIR}/{name}; create it with: ip netns add {name})")
        if self.userns is not None:
            from .errors import userns_unavailable

            reason = userns_unavailable()
            if reason:
                raise SandboxError(f"cannot create a user namespace: {reason}")

    def to_wire(self) -> dict:
        return {
            "grace": self.grace,
            "stop_signal": self.stop_signal,
            "mounts": [(m.kind, m.target, m.source) for m in self.mounts],
            "propagation": self.propagation,
            "ignored_signals": list(self.ignored_signals),
            "net": self.net,
            "userns": list(self.userns) if self.userns is not None else None,
            "hostname": self.hostname,
            "proc": self.proc,
        }

    @classmethod
    def from_wire(cls, data: dict) -> SandboxSpec:
        return cls(
            data["grace"],
            data["stop_signal"],
            tuple(Mount(kind, target, source) for kind, target, source in data["mounts"]),
            data["propagation"],
            tuple(data["ignored_signals"]),
            net=data.get("net", "host"),
            userns=tuple(data["userns"]) if data.get("userns") is not None else None,  # type: ignore[arg-type]
            hostname=data.get("hostname"),
            proc=data.get("proc", True),
        )


def duration(value: object, name: str) -> float:
    """A number of seconds >= 0 as a float; infinity is allowed and means no limit.

    Every wait of ours is capped per step (linux.wait_seconds), so no finite value overflows a
    system call, however large.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {value!r}")
    value = float(value)
    if math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be a number of seconds >= 0, not {value!r}")
    return value


def _net(net: object) -> str:
    if isinstance(net, str):
        if net in ("host", "none"):
            return net
        if net.startswith("netns:"):
            name = net[len("netns:"):]
            if name and "/" not in name and "\0" not in name and name not in (".", ".."):
                return net
            raise ValueError(f"--net {net}: NAME must be the name of a network namespace in {NETNS_DIR}")
    raise ValueError(f"unknown net mode {net!r}: use one of {', '.join(NET_MODES)}")


def _id(value: object, option: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{option} must be a number, not {value!r}")
    if not 0 <= value <= MAX_ID:
        raise ValueError(f"{option} {value} is out of range (0 to {MAX_ID})")
    return value


def _userns(userns: object, uid: object, gid: object) -> tuple[int, int] | None:
    """The (uid, gid) the caller becomes inside a user namespace, or None for no user namespace.

    One is made when asked, when the caller is not root (it could not make the other namespaces),
    or when --uid/--gid are given: the caller's own uid and gid map to them (0 by default).
    """
    if userns is not None and not isinstance(userns, bool):
        raise ValueError(f"userns must be True, False or None, not {userns!r}")
    ids = (_id(uid, "--uid") if uid is not None else 0, _id(gid, "--gid") if gid is not None else 0)
    if userns is False:
        if uid is not None or gid is not None:
            raise ValueError("--uid and --gid need a user namespace (userns=False was given)")
        return None
    if userns or uid is not None or gid is not None or os.geteuid() != 0:
        return ids
    return None


def _hostname(hostname: object) -> str | None:
    if hostname is None:
        return None
    if not isinstance(hostname, str) or not 0 < len(hostname.encode()) <= 64 or not all(
            c.isascii() and (c.isalnum() or c in "-.") for c in hostname):
        raise ValueError(f"--hostname {hostname!r}: use 1 to 64 letters, digits, '-' and '.'")
    return hostname


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, not {value!r}")
    return value


def _absolute(path: object, option: str) -> str:
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str) or not path:
        raise ValueError(f"{option} needs a path, not {path!r}")
    if "\0" in path:
        raise ValueError(f"{option} {path!r}: a path cannot contain a NUL byte")
    if not path.startswith("/"):
        raise ValueError(f"{option} {path}: the path must be absolute")
    return os.path.normpath(path)


def _bind(kind: str, item: object) -> Mount:
    option = f"--{kind}"
    if isinstance(item, os.PathLike):
        item = os.fspath(item)
    if isinstance(item, str):
        source, sep, target = item.partition(":")
        if not sep:
            target = source
    elif isinstance(item, tuple) and len(item) == 2:
        source, target = item
    else:
        raise ValueError(f"{option} takes SRC[:DST] or a (src, dst) pair, not {item!r}")
    return Mount(kind, _absolute(target, option), _absolute(source, option))


def _stat(path: str, mount: Mount) -> os.stat_result:
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise SandboxError(f"{mount.describe()}: {path} does not exist") from None
    except OSError as exc:
        raise SandboxError(f"{mount.describe()}: {path}: {exc.strerror}") from None
