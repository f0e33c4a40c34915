"""--syscall-filter and --syscall-errno: their values, read as systemd reads SystemCallFilter= and
SystemCallErrorNumber= (systemd.exec(5)).

A SPEC is a space-separated list of system call names and groups (@mount, @system-service, ...:
syscall_groups.py); a leading ~ makes it a deny list. The first SPEC decides what the filter is: an
allow list (every other call fails; systemd's @default, which every program needs to start and
exit, is always allowed) or a deny list (the named calls fail). Later SPECs of the same kind add to
it; of the other kind, take away from it. A refused call fails with the errno of --syscall-errno
(default EPERM).

Nothing here is imported unless one of the options is given; the groups' lists (syscall_groups) are
read only then, and libseccomp only for a name the lists do not have.
"""

from __future__ import annotations

import errno as _errno

MAX_ERRNO = 4095  # the kernel's SECCOMP_RET_DATA takes 16 bits; an errno above 4095 is no errno to libc


def spec(value: object, name: str) -> str:
    """One SPEC, its words checked (ValueError naming every unknown one) and joined by single spaces."""
    if not isinstance(value, str):
        raise TypeError(f"{name} takes a string such as '~@mount @swap', not {value!r}")
    deny = value.lstrip().startswith("~")
    words = value.lstrip().removeprefix("~").split()
    if not words:
        raise ValueError(f"{name} {value!r}: name system calls or @groups (a leading ~ denies them)")
    with_errno = [word for word in words if ":" in word]
    if with_errno:
        raise ValueError(f"{name}: {with_errno[0]}: an errno per call is not supported; --syscall-errno sets the "
                         "one every refused call gets")
    unknown = [word for word in words if not _known(word)]
    if unknown:
        what = "group" if all(word.startswith("@") for word in unknown) else "system call or group"
        groups = ", ".join(_groups())
        raise ValueError(f"{name}: unknown {what} {', '.join(unknown)} (groups: {groups})")
    return ("~" if deny else "") + " ".join(words)


def specs(values: object, name: str) -> tuple[str, ...]:
    if isinstance(values, str):
        raise ValueError(f"{name} takes a list of filters, not a single string: {values!r}")
    try:
        items = list(values)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(f"{name} takes a list of filters, not {values!r}") from None
    return tuple(spec(item, name) for item in items)


def errno_value(value: object, name: str) -> int:
    """An errno by name (EPERM, EACCES, ENOSYS, ...) or number, 1 to 4095."""
    if isinstance(value, str):
        word = value.strip().upper()
        for number, known in _errno.errorcode.items():
            if known == word:
                return number
        if not (word.isascii() and word.isdigit()):
            raise ValueError(f"{name}: unknown errno {value!r} (EPERM, EACCES, ENOSYS, ...)")
        value = int(word)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an errno name or number, not {value!r}")
    if not 1 <= value <= MAX_ERRNO:
        raise ValueError(f"{name} {value}: an errno is from 1 to {MAX_ERRNO}")
    return value


def resolve(checked: tuple[str, ...]) -> tuple[bool, frozenset[str]]:
    """(allow list?, the system call names) that checked SPECs make together, groups expanded."""
    allow: bool | None = None
    names: set[str] = set()
    for one in checked:
        deny = one.startswith("~")
        members = expand(one.removeprefix("~").split())
        if allow is None:
            allow = not deny
            if allow:
                names |= expand(["@default"])
        if allow != deny:
            names |= members
        else:
            names -= members
    return bool(allow), frozenset(names)


def expand(words: list[str]) -> set[str]:
    """The system call names of words, every group (and the groups within it) expanded."""
    from .syscall_groups import GROUPS

    found: set[str] = set()
    pending, seen = list(words), set()
    while pending:
        word = pending.pop()
        if word in seen:
            continue
        seen.add(word)
        if word.startswith("@"):
            pending += GROUPS[word][1].split()
        else:
            found.add(word)
    return found


def _groups() -> list[str]:
    from .syscall_groups import GROUPS

    return list(GROUPS)


def _known(word: str) -> bool:
    from .syscall_groups import GROUPS

    if word.startswith("@"):
        return word in GROUPS
    if not word.replace("_", "").isalnum() or not word.isascii():
        return False
    if any(word in members.split() for _, members in GROUPS.values()):
        return True
    try:
        import pyseccomp
    except (ImportError, RuntimeError):
        return False
    return pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, word) != NR_SCMP_ERROR


NR_SCMP_ERROR = -1  # libseccomp's answer for a name it does not know
