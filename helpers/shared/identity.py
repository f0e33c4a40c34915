"""Who the job runs as: --user, --group and --groups (user=, group=, extra_groups=), as numbers.

Names are looked up in the host's user and group databases (pwd, grp: imported only when one is given)
by the front end, before anything starts, so that a typo is a usage error naming it and the reaper
works with ids alone. A number is taken as it is, as setpriv and subprocess take it.

settle() then makes them whole: as root without a user namespace, a user's group and supplementary
groups default to the databases' (as setpriv --init-groups and systemd-run --uid do). In a user
namespace the ids are the namespace's, which maps one uid and one gid: the caller's, to --userns-uid
and --userns-gid (default 0). Naming the caller (its uid or name) maps it to its own ids there, so
an ordinary user may "become themselves"; any other id is refused (settle: a usage error for root,
who could drop --userns; refusal() for an ordinary user, who may not become another user at all).
"""

from __future__ import annotations

MAX_ID = 2**32 - 2  # (uid_t)-1 means "no change" to the kernel

TYPE_CHECKING = False  # typing stays out of the spawn server, whose every reaper is a fork of it
if TYPE_CHECKING:
    from typing import Any


def _number(value: object, name: str, kind: str) -> int | None:
    """A uid or gid given as a number (an int, or a word of ASCII digits); None for a name."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"{name} must be a {kind} name or number, not {value!r}")
    if isinstance(value, str):
        if not value or "\0" in value:
            raise ValueError(f"{name}: {value!r} is not a {kind} name or number")
        if not (value.isascii() and value.isdigit()):
            return None
        value = int(value)
    if not 0 <= value <= MAX_ID:
        raise ValueError(f"{name} {value} is out of range (0 to {MAX_ID})")
    return value


def user(value: object, name: str) -> int | None:
    """A user name or uid -> the uid (ValueError naming an unknown user)."""
    if value is None:
        return None
    number = _number(value, name, "user")
    if number is not None:
        return number
    import pwd

    try:
        return pwd.getpwnam(str(value)).pw_uid
    except KeyError:
        raise ValueError(f"{name} {value}: no such user") from None


def group(value: object, name: str) -> int | None:
    """A group name or gid -> the gid (ValueError naming an unknown group)."""
    if value is None:
        return None
    number = _number(value, name, "group")
    if number is not None:
        return number
    import grp

    try:
        return grp.getgrnam(str(value)).gr_gid
    except KeyError:
        raise ValueError(f"{name} {value}: no such group") from None


def groups(values: object, name: str) -> tuple[int, ...] | None:
    """Supplementary groups (names or gids) -> their gids, sorted, each once; None: the user's own."""
    if values is None:
        return None
    if isinstance(values, (str, bytes)):
        raise ValueError(f"{name} takes a list of groups, not a single string: {values!r}")
    try:
        items = list(values)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(f"{name} takes a list of group names or gids, not {values!r}") from None
    return tuple(sorted({group(item, name) for item in items}))  # type: ignore[misc]


def settle(checked: dict[str, Any], spelled: Any) -> None:
    """Complete user, group and extra_groups in the checked options (userns already resolved), and map the
    caller to its own ids in its user namespace where it names itself. spelled(name) is how the caller
    writes an option. ValueError for what no caller could have; refusal() says what only root may."""
    uid, gid, extra = checked["user"], checked["group"], checked["extra_groups"]
    if uid is None and gid is None and extra is None:
        return
    if not checked["userns"]:
        if uid is not None:
            entry = _entry(uid)
            if gid is None:
                if entry is None:
                    raise ValueError(f"{spelled('user')} {uid}: no such user in the user database, so it has no "
                                     f"group to take: give {spelled('group')} (and {spelled('groups')})")
                gid = entry.pw_gid
            if extra is None:
                import os

                extra = tuple(sorted(set(os.getgrouplist(entry.pw_name, gid)))) if entry is not None else ()
        checked.update(user=uid, group=gid, extra_groups=extra)
        return
    import os

    me_uid, me_gid = os.geteuid(), os.getegid()
    if extra is not None:
        raise ValueError(f"{spelled('groups')}: in a user namespace the supplementary groups cannot be changed (the "
                         "kernel denies setgroups there); the job keeps the caller's, shown as nobody")
    if uid is not None and uid != (checked["userns_uid"] or 0):
        if uid == me_uid and checked["userns_uid"] is None:
            checked["userns_uid"] = uid  # becoming yourself: mapped to your own ids, as on the host
            if checked["userns_gid"] is None and gid in (None, me_gid):
                checked["userns_gid"] = me_gid
        elif me_uid == 0:
            raise ValueError(f"{spelled('user')} {uid}: in a user namespace only the caller is mapped (as uid "
                             f"{checked['userns_uid'] or 0}, {spelled('userns_uid')}); without "
                             f"{spelled('userns')} root switches to any user of the host")
    if gid is not None and gid != (checked["userns_gid"] or 0):
        if gid == me_gid and checked["userns_gid"] is None:
            checked["userns_gid"] = gid
        elif me_uid == 0:
            raise ValueError(f"{spelled('group')} {gid}: in a user namespace only the caller's group is mapped (as "
                             f"gid {checked['userns_gid'] or 0}, {spelled('userns_gid')}); without "
                             f"{spelled('userns')} root switches to any group of the host")
    if uid is not None and gid is None:
        gid = checked["userns_gid"] or 0  # the one group there is
    checked.update(user=uid, group=gid)


def refusal(user_id: int | None, group_id: int | None, mapped: tuple[int, int], spelled: Any) -> str | None:
    """Why an ordinary user cannot switch to these ids in its user namespace (None: it can): only the ids the
    caller is mapped to exist there."""
    if user_id is not None and user_id != mapped[0]:
        return (f"{spelled('user')} {_shown(user_id, 'user')}: an ordinary user can run the job only as themselves; "
                "switching to another user needs root")
    if group_id is not None and group_id != mapped[1]:
        return (f"{spelled('group')} {_shown(group_id, 'group')}: an ordinary user can run the job only with their own "
                "group; another one needs root")
    return None


def _entry(uid: int) -> Any:
    import pwd

    try:
        return pwd.getpwuid(uid)
    except KeyError:
        return None


def _shown(number: int, kind: str) -> str:
    """A uid or gid with its name, where the databases have one."""
    try:
        if kind == "user":
            import pwd

            return f"{pwd.getpwuid(number).pw_name} ({number})"
        import grp

        return f"{grp.getgrgid(number).gr_name} ({number})"
    except KeyError:
        return str(number)
