"""Who may reach a reaper through its registry socket: a process that lives outside the sandbox, where it
was started from, as the kernel places it (never by what it claims, nor by its uid, which a job shares
with the host's user).

The rule: the client lives in the PID namespace the sandbox was started from, or in an ancestor of it.
So the host reaches the sandboxes started on the host, a sandbox's job reaches the sandboxes it started
in there, and nothing reaches a sandbox from inside it (its job, a command --enter put in there, a
sandbox started in there) or from another sandbox beside it.

What the kernel tells us, in the order we ask:

- SO_PEERCRED numbers the client in our PID namespace, 0 if it has no number here: a number means it
  lives in here, or below.
- SO_PEERPIDFD (Linux 6.5) gives a pidfd of the client, wherever it lives.
- PIDFD_GET_PID_NAMESPACE (Linux 6.11) gives the client's PID namespace, if we may read the client as
  ptrace would (root may; a reaper in a user namespace may not read a process outside it). Our own PID 1
  has a number in that namespace (NS_GET_PID_IN_PIDNS) exactly when it is ours or one of its ancestors.
- Otherwise (a reaper in a user namespace of its own, or a kernel before 6.11) the /proc we were started
  under tells: a copy of the launcher's, taken before ours covered it (mounts.Procs). Once the kernel
  confirms that it is the proc of the namespace we were started from (it numbers us at two levels: there,
  and 1 here), it numbers the client's pidfd at each level from there down (fdinfo's NSpid): one number,
  and the client lives there. A client in an ancestor has none there: such a sandbox is reached from
  where it was started only.

A kernel before 6.5 has no SO_PEERPIDFD: then the client must prove where it lives. Its first message
carries a pidfd of itself (our clients always send one); we accept it if the kernel places that process
where we were started from (as above, through the launcher's /proc) and that process holds the socket at
the other end of this connection (sock_diag names the peer socket's inode; the process's fd table, read
through the same /proc, must show it). A job cannot pass for the host that way: it can open pidfds only
of processes it sees, all of them inside a sandbox. (A reaper in a user namespace may not read the fd
table of a process outside it; there the pidfd's namespace alone decides, for that reason.)

The namespace we were started from is not ours to ask for: NS_GET_PARENT on our own PID namespace is
refused (EPERM) to every process in it, PID 1 included, and SO_PEERCRED says 0 alike for the host and
for another sandbox.
"""

from __future__ import annotations

import _socket as socket
import errno
import os
import select

from ..shared import linux, registry

# A verdict of Gate.refusal(): admitted once the client's first message proves where it lives (proven()).
PROOF_NEEDED = "proof needed"


class Gate:
    """The check of each client; launcher_proc: the /proc we were started under (taken over), None if none;
    listening: our registry socket, whose kernel says whether it has SO_PEERPIDFD."""

    def __init__(self, launcher_proc: int | None, listening: socket.socket) -> None:
        self.launcher_proc = launcher_proc
        self.launcher_proc_confirmed: bool | None = None  # asked once, when first needed
        # Made now, while we are still in the network namespace our registry socket was made in (a --net
        # option moves us to another later): only there does the kernel answer about its connections.
        self.diag = None if linux.supports_peer_pidfd(listening) else linux.unix_diag_socket()

    def refusal(self, conn: socket.socket, peer_pid: int, name: str) -> str | None:
        """Why the client at conn may not reach the sandbox name, in one line; None: it may; PROOF_NEEDED: it may
        once its first message proves it (proven()). peer_pid: its PID as SO_PEERCRED gave it."""
        if peer_pid != 0:
            return registry.unreachable(name)
        if self.diag is not None:
            return PROOF_NEEDED
        try:
            pidfd = linux.peer_pidfd(conn)
        except OSError:
            return registry.unreachable(name)  # it has gone: nobody to answer
        try:
            return None if self.outside(pidfd) else registry.unreachable(name)
        finally:
            os.close(pidfd)

    def proven(self, conn: socket.socket, fds: list[int]) -> bool:
        """Whether the first descriptor a client sent is a pidfd of a process that lives where we were started
        from (or above) and holds the other end of conn (a kernel without SO_PEERPIDFD)."""
        if not fds or self.diag is None or self.launcher_proc is None:
            return False
        pidfd = fds[0]
        numbers = self.numbered_from_launcher(pidfd)
        if len(numbers) != 1:
            return False
        try:
            peer = linux.unix_peer_inode(self.diag, conn)
        except OSError:
            return False
        return self.holds(numbers[0], f"socket:[{peer}]") is not False and not select.select([pidfd], [], [], 0)[0]

    def holds(self, pid: int, link: str) -> bool | None:
        """Whether process pid (numbered as the launcher's /proc does) has a descriptor that is link; None if the
        kernel does not let us read its descriptors (EACCES: we are in a user namespace, it is not)."""
        try:
            table = os.open(f"{pid}/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.launcher_proc)
        except OSError:
            return False
        try:
            for entry in os.listdir(table):
                try:
                    if os.readlink(entry, dir_fd=table) == link:
                        return True
                except PermissionError:
                    return None
                except OSError:
                    continue
            return False
        except OSError:
            return False
        finally:
            os.close(table)

    def outside(self, pidfd: int) -> bool:
        """Whether the pidfd's process (not in our PID namespace nor below) lives where we were started from,
        or above."""
        try:
            namespace = linux.pid_namespace_of(pidfd)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.ENOTTY, errno.EINVAL):
                return False  # ESRCH: it has exited
            return len(self.numbered_from_launcher(pidfd)) == 1
        try:
            return linux.pid_in_namespace(namespace, 1) > 0
        finally:
            os.close(namespace)

    def numbered_from_launcher(self, pidfd: int) -> list[int]:
        """The numbers the pidfd's process has in each PID namespace from the one we were started from down to
        its own ([]: it lives in none of them, or we cannot tell; a descriptor that is no pidfd has none)."""
        if self.launcher_proc is None:
            return []
        if self.launcher_proc_confirmed is None:
            ours = _nspid(self.launcher_proc, "self/status")
            self.launcher_proc_confirmed = len(ours) == 2 and ours[-1] == 1
        if not self.launcher_proc_confirmed:
            return []
        numbers = _nspid(self.launcher_proc, f"self/fdinfo/{pidfd}")
        return numbers if numbers and numbers[0] > 0 else []

    def close(self) -> None:
        if self.launcher_proc is not None:
            os.close(self.launcher_proc)
            self.launcher_proc = None
        if self.diag is not None:
            self.diag.close()
            self.diag = None


def _nspid(proc: int, path: str) -> list[int]:
    """The numbers of an NSpid line (a task's status, a pidfd's fdinfo) read through proc; [] if unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc)
    except OSError:
        return []
    try:
        data = os.read(fd, 16384)
    except OSError:
        return []
    finally:
        os.close(fd)
    for line in data.splitlines():
        if line.startswith(b"NSpid:"):
            try:
                return [int(number) for number in line.split()[1:]]
            except ValueError:
                return []
    return []
