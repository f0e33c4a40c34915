"""Asking systemd for a transient scope over D-Bus, as `systemd-run --scope` does (with jeepney, a pure-Python
D-Bus library, imported only when a sandbox has limits).

StartTransientUnit makes the scope with our process in it and the limits as its properties; systemd
moves the process in when the start job runs, so we wait for that job's JobRemoved signal (and its
result) before the sandbox may start anything. systemd removes the scope once it is empty: also when
everything of ours was SIGKILLed.
"""

from __future__ import annotations

import os

from .shared import cgroups
from .shared.errors import SandboxError

TIMEOUT = 30.0  # seconds for systemd's answer: a stuck bus must not hold the start for ever
_NAME, _PATH = "org.freedesktop.systemd1", "/org/freedesktop/systemd1"
_MANAGER = "org.freedesktop.systemd1.Manager"


def start_scope(name: str, pid: int, limits: dict[str, int | float], description: str) -> str:
    """Make the transient scope `name` holding pid, with limits (and every accounting on, for the usage
    figures); return its cgroup path relative to cgroups.ROOT. SandboxError (125) if systemd refuses."""
    try:
        from jeepney import DBusAddress, MatchRule, message_bus, new_method_call
        from jeepney.io.blocking import open_dbus_connection
        from jeepney.wrappers import DBusErrorResponse, unwrap_msg
    except ImportError:
        raise SandboxError("limits under systemd need the jeepney package (pip install jeepney)") from None
    address = cgroups.bus_address()
    if address is None:
        raise SandboxError("cannot reach systemd: no D-Bus bus to ask for a scope")
    systemd = DBusAddress(_PATH, bus_name=_NAME, interface=_MANAGER)
    properties = [
        ("Description", ("s", description)),
        ("PIDs", ("au", [pid])),
        # Gone once it ends, however it ended (a scope whose process was OOM-killed counts as failed).
        ("CollectMode", ("s", "inactive-or-failed")),
        # An OOM kill is the job's to handle and ours to report: systemd must not stop the scope for it.
        ("OOMPolicy", ("s", "continue")),
        *((key, ("b", True)) for key in ("CPUAccounting", "MemoryAccounting", "IOAccounting", "TasksAccounting")),
        *cgroups.properties(limits),
    ]
    try:
        with open_dbus_connection(address, auth_timeout=TIMEOUT) as bus:
            signal = {"type": "signal", "interface": _MANAGER, "member": "JobRemoved", "path": _PATH}
            # The bus resolves the sender's well-known name; our own filter sees only its unique name.
            unwrap_msg(bus.send_and_get_reply(message_bus.AddMatch(MatchRule(sender=_NAME, **signal)),
                                              timeout=TIMEOUT))
            removed = MatchRule(**signal)
            with bus.filter(removed, bufsize=64) as signals:
                reply = bus.send_and_get_reply(new_method_call(systemd, "StartTransientUnit", "ssa(sv)a(sa(sv))",
                                                               (name, "fail", properties, [])), timeout=TIMEOUT)
                job = unwrap_msg(reply)[0]
                while True:
                    _, path, unit, result = bus.recv_until_filtered(signals, timeout=TIMEOUT).body
                    if path == job:
                        break
    except DBusErrorResponse as exc:
        text = exc.data[0] if exc.data else exc.name
        raise SandboxError(f"systemd refused the sandbox's scope: {text}") from None
    except TimeoutError:
        raise SandboxError(f"systemd did not make the sandbox's scope within {TIMEOUT:g} s") from None
    except OSError as exc:
        raise SandboxError(f"cannot ask systemd for a scope over D-Bus ({address}): {exc.strerror or exc}") from None
    if result != "done":
        raise SandboxError(f"systemd could not start the sandbox's scope {unit}: {result}")
    path = cgroups.own(pid)
    if not path.endswith("/" + name):
        raise SandboxError(f"systemd made the scope {name}, but process {pid} is not in it")
    return path


def scope_name(pid: int) -> str:
    return f"sandboxed-run-{pid}-{os.urandom(4).hex()}.scope"
