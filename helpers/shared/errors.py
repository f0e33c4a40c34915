"""Our own failures, and the kernel's errors translated into what the user should do."""

from __future__ import annotations

import errno
import os

EXIT_TIMEOUT = 124
EXIT_FAILURE = 125
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127
EXIT_USAGE = 2


class SandboxError(OSError):
    """The sandbox could not be set up; str() says what to do. exit_code is the shell status the CLI uses."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE, err: int = 0) -> None:
        super().__init__(err, message)
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message

    @staticmethod
    def for_exit_code(exit_code: int, message: str, err: int = 0) -> SandboxError:
        """The error a reaper reported, as the class an `except` clause written for subprocess expects."""
        if exit_code == EXIT_NOT_FOUND:
            return CommandNotFound(message)
        if exit_code == EXIT_NOT_EXECUTABLE and err in (0, errno.EACCES, errno.EPERM):
            return NotExecutable(message)
        if message.startswith(CHDIR_FAILED) and err in _DIRECTORY_ERRORS:
            error = _DIRECTORY_ERRORS[err](message, exit_code, err)
            error.strerror = os.strerror(err)  # subprocess's, as the class is; str() stays our line
            return error
        return SandboxError(message, exit_code, err)


class CommandNotFound(SandboxError, FileNotFoundError):
    """The program does not exist inside the sandbox (exit status 127). As subprocess's FileNotFoundError:
    errno ENOENT, its strerror, and (in the API) the program as filename; str() is our one line."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_NOT_FOUND, errno.ENOENT)
        self.strerror = os.strerror(errno.ENOENT)


# The job's working directory could not be entered: the message begins so (the reaper's, --enter's), and the
# error is the OSError subprocess raises for it, its filename (in the API) the directory.
CHDIR_FAILED = "cannot change to directory "


class DirectoryNotFound(SandboxError, FileNotFoundError):
    """The job's working directory does not exist inside the sandbox."""


class DirectoryNotPermitted(SandboxError, PermissionError):
    """The job may not enter its working directory."""


class NotADirectory(SandboxError, NotADirectoryError):
    """The job's working directory is not a directory."""


_DIRECTORY_ERRORS: dict[int, type[SandboxError]] = {
    errno.ENOENT: DirectoryNotFound, errno.EACCES: DirectoryNotPermitted, errno.EPERM: DirectoryNotPermitted,
    errno.ENOTDIR: NotADirectory}


class NotExecutable(SandboxError, PermissionError):
    """The program exists but cannot be executed (exit status 126)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_NOT_EXECUTABLE, errno.EACCES)
        self.strerror = os.strerror(errno.EACCES)


def _userns_hint() -> str:
    if _sysctl("user.max_user_namespaces") == "0":
        return " (user namespaces are disabled: sysctl user.max_user_namespaces=0)"
    if _sysctl("kernel.unprivileged_userns_clone") == "0":
        return " (unprivileged user namespaces are disabled: sysctl kernel.unprivileged_userns_clone=0)"
    return ""


def _sysctl(name: str) -> str | None:
    try:
        with open("/proc/sys/" + name.replace(".", "/")) as f:
            return f.read().strip()
    except OSError:
        return None


def userns_unavailable() -> str | None:
    """Why this caller cannot create a user namespace, naming the setting to change; None if it can."""
    if _sysctl("user.max_user_namespaces") == "0":
        return "user namespaces are disabled (set sysctl user.max_user_namespaces to a positive number, e.g. 10000)"
    if os.geteuid() != 0:
        if _sysctl("kernel.unprivileged_userns_clone") == "0":
            return "unprivileged user namespaces are disabled (set sysctl kernel.unprivileged_userns_clone=1)"
        if _sysctl("kernel.apparmor_restrict_unprivileged_userns") == "1":
            return ("AppArmor forbids unprivileged user namespaces "
                    "(set sysctl kernel.apparmor_restrict_unprivileged_userns=0, or run as root)")
    return None


def unshare(flag: int, what: str) -> None:
    """unshare(2) of one namespace (what names it: "a PID namespace"), or the SandboxError that says what to do."""
    from . import linux

    try:
        linux.unshare(flag)
    except OSError as exc:
        raise namespace_error(exc, what) from None


def namespace_error(exc: OSError, what: str) -> SandboxError:
    """unshare/setns failed: say which limit or privilege is missing."""
    if what == "a user namespace" and exc.errno in (errno.EPERM, errno.EACCES, errno.ENOSPC):
        reason = userns_unavailable() or (
            "a security module (AppArmor, SELinux) or the namespace limit forbids it" if exc.errno != errno.ENOSPC
            else "the limit is reached (raise sysctl user.max_user_namespaces)")
        return SandboxError(f"cannot create {what}: {reason}", err=exc.errno)
    if exc.errno == errno.EPERM:
        hint = _userns_hint() or " (run as root, or with CAP_SYS_ADMIN)"
        return SandboxError(f"cannot create {what}: operation not permitted{hint}", err=exc.errno)
    if exc.errno == errno.ENOSPC:
        return SandboxError(
            f"cannot create {what}: the limit of namespaces is reached (raise the user.max_*_namespaces sysctls)",
            err=exc.errno,
        )
    if exc.errno == errno.EINVAL:
        return SandboxError(
            f"cannot create {what}: the kernel refused (EINVAL); is namespace support (CONFIG_*_NS) built in, "
            "and is the process single-threaded?",
            err=exc.errno,
        )
    if exc.errno == errno.ENOMEM:
        return SandboxError(f"cannot create {what}: out of memory or PID namespace nesting too deep", err=exc.errno)
    return SandboxError(f"cannot create {what}: {exc.strerror}", err=exc.errno or 0)


# What host_error() names a limit for: the caller's resources, not a fault of ours or of the job's.
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM})


def host_error(exc: OSError, what: str) -> SandboxError:
    """A system call failed for want of a resource of the caller's (descriptors, processes, memory): name the
    limit to raise. Any other error: its own words."""
    err = exc.errno or 0
    if err == errno.EMFILE:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return SandboxError(f"{what}: too many open files (the limit is {soft}: raise it, e.g. ulimit -n 1024)",
                            err=err)
    if err == errno.ENFILE:
        return SandboxError(f"{what}: the system has too many open files (fs.file-max)", err=err)
    if err == errno.EAGAIN:  # fork, clone and posix_spawn: RLIMIT_NPROC, or the system's threads-max
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NPROC)[0]
        shown = "unlimited" if soft == resource.RLIM_INFINITY else str(soft)
        return SandboxError(f"{what}: too many processes (this user's limit is {shown}: raise it, e.g. "
                            "ulimit -u 4096; or the system's kernel.threads-max)", err=err)
    if err == errno.ENOMEM:
        return SandboxError(f"{what}: out of memory", err=err)
    return SandboxError(f"{what}: {exc.strerror or exc}", err=err)


def mount_error(exc: OSError, action: str, path: str, userns: bool = False, kind: str = "") -> SandboxError:
    """A set-up step inside the sandbox failed: name the path, the likely cause and what to do. kind is the
    step's option (tmpfs, bind, overlay, dev...), userns whether the sandbox has a user namespace."""
    err = exc.errno or 0
    if err == errno.EPERM and userns:
        reason = {
            "overlay": "a user namespace may not mount overlayfs here (Linux 5.11 and later allow it, on file systems "
                       "it can stack on); run as root without a user namespace (--userns not given, as root)",
            "bind": "the host locked this mount's flags (read-only, nosuid, nodev, noexec) for user namespaces; "
                    "run as root without a user namespace",
        }.get("bind" if kind == "ro_bind" else kind,
              "not permitted in a user namespace; run as root without a user namespace")
    elif err == errno.EPERM:
        reason = "operation not permitted (run as root, or with CAP_SYS_ADMIN)"
    elif err == errno.EINVAL and kind == "tmpfs":
        reason = "the kernel refused the tmpfs options (size, mode)"
    elif err == errno.EINVAL and kind == "overlay":
        reason = ("the kernel refused the overlay: its writable layer and work directory must be on one file system "
                  "that overlayfs can write to (not an overlay, NFS or FUSE)")
    elif err in (errno.ELOOP, errno.EBUSY) and kind == "overlay":
        reason = "the layers overlap or are in use by another overlay: give UPPER a directory of its own"
    elif err == errno.ENODEV:
        fstype = {"overlay": "overlay", "dev": "devpts"}.get(kind, kind or "this")
        reason = f"this kernel has no {fstype} file system (load its module: modprobe {fstype})"
    else:
        reason = {
            errno.ENOENT: "it does not exist inside the sandbox: create it, put it below a tmpfs of the sandbox, "
                          "or ask for it to be created (--mkdir, mkdir=True)",
            errno.ENOTDIR: "a directory and a file do not match",
            errno.EACCES: "permission denied (the directories on its way do not let the job's user through)",
            errno.EROFS: "the file system there is read-only (--read-only, a read-only bind, or the host's): create "
                         "it on the host first, or mount a tmpfs above it",
            errno.EEXIST: "something else exists there",
            errno.EINVAL: "the kernel refused the mount (EINVAL)",
            errno.ENOSPC: "no room: the file system is full, or the mount limit is reached (sysctl fs.mount-max)",
            errno.EBUSY: "it is busy",
            errno.EXDEV: "the paths are on different file systems",
        }.get(err, exc.strerror or str(exc))
    return SandboxError(f"cannot {action} {path}: {reason}", err=err)


# -- running sandboxes (sandboxed-run --stop, --enter; sandbox.stop_running) ---------------------------------

EXIT_NO_SUCH_SANDBOX = 1
EXIT_NOT_PERMITTED = 4


class SandboxNotFound(SandboxError, LookupError):
    """No running sandbox has that name (among those the caller may see: its own; root's: everyone's)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_NO_SUCH_SANDBOX, errno.ESRCH)


class SandboxNotPermitted(SandboxError, PermissionError):
    """The sandbox is another user's: only its owner and root may list its details, enter or stop it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_NOT_PERMITTED, errno.EACCES)
