"""The pure description of a sandbox: what to mount, how to stop it. Validated before anything starts."""

from __future__ import annotations

import math
import os
import signal
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field

from .errors import SandboxError
from .signals import parse_signal

PROPAGATIONS = ("slave", "private")
DEFAULT_GRACE = 10.0


@dataclass(frozen=True)
class Mount:
    """One mount made inside the sandbox, in order: kind is 'tmpfs', 'bind' or 'ro-bind'."""

    kind: str
    target: str
    source: str | None = None

    def describe(self) -> str:
        return f"--{self.kind} {self.source + ':' if self.source else ''}{self.target}"


@dataclass(frozen=True)
class SandboxSpec:
    grace: float = DEFAULT_GRACE
    stop_signal: int = signal.SIGTERM
    mounts: tuple[Mount, ...] = ()
    propagation: str = "slave"
    ignored_signals: tuple[int, ...] = field(default=())

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
    ) -> SandboxSpec:
        """Check every value on its own (ValueError); check_host() then checks them against the machine."""
        if isinstance(grace, bool) or not isinstance(grace, (int, float)):
            raise ValueError(f"grace must be a number of seconds, not {grace!r}")
        if not math.isfinite(grace) or grace < 0:
            raise ValueError(f"grace must be a finite number of seconds >= 0, not {grace!r}")
        try:
            stop = parse_signal(stop_signal)
        except ValueError:
            raise ValueError(f"unknown stop signal {stop_signal!r}") from None
        if stop == signal.SIGSTOP:
            raise ValueError("the stop signal cannot be SIGSTOP: it does not end a process")
        if propagation not in PROPAGATIONS:
            raise ValueError(f"propagation must be one of {', '.join(PROPAGATIONS)}, not {propagation!r}")
        if isinstance(tmpfs, (str, bytes)) or isinstance(binds, (str, bytes)) or isinstance(ro_binds, (str, bytes)):
            raise ValueError("tmpfs, binds and ro_binds take a list of paths, not a single string")
        mounts = [Mount("tmpfs", _absolute(path, "--tmpfs")) for path in tmpfs]
        mounts += [_bind("bind", item) for item in binds]
        mounts += [_bind("ro-bind", item) for item in ro_binds]
        # Parents before children, so that a bind below a tmpfs lands on top of it; ties keep the given order.
        mounts.sort(key=lambda m: m.target.rstrip("/").count("/"))
        return cls(float(grace), stop, tuple(mounts), propagation, tuple(sorted({int(s) for s in ignored_signals})))

    def check_host(self) -> None:
        """Check the paths as the host sees them (SandboxError), so a typo fails before anything starts."""
        for m in self.mounts:
            target = _stat(m.target, m)
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

    def to_wire(self) -> dict:
        return {
            "grace": self.grace,
            "stop_signal": self.stop_signal,
            "mounts": [(m.kind, m.target, m.source) for m in self.mounts],
            "propagation": self.propagation,
            "ignored_signals": list(self.ignored_signals),
        }

    @classmethod
    def from_wire(cls, data: dict) -> SandboxSpec:
        return cls(
            data["grace"],
            data["stop_signal"],
            tuple(Mount(kind, target, source) for kind, target, source in data["mounts"]),
            data["propagation"],
            tuple(data["ignored_signals"]),
        )


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
