"""The job's syscall filter (--syscall-filter), built with libseccomp (pyseccomp, over the system's
libseccomp2) in the job's first process and loaded last before its exec.

The filter knows the native architecture alone: a call made through another one (x86's int 0x80 on
x86_64, x32's numbers) kills the process, so no second system call table gets around a deny list.
The kernel wants no_new_privs for a filter unless the process holds CAP_SYS_ADMIN (in its user
namespace): libseccomp sets it then, and leaves it alone otherwise. A filter cannot be removed, and
every child inherits it; one the job adds can only refuse more.
"""

from __future__ import annotations

from . import syscalls


def build(checked: tuple[str, ...], errno_number: int):  # noqa: ANN201 - a pyseccomp.SyscallFilter
    """The filter that the checked SPECs make, ready to load() on this process (OSError: libseccomp refused).
    Whether it needs no_new_privs is decided now: build it after the capabilities change."""
    import prctl

    seccomp = _pyseccomp()
    allow, names = syscalls.resolve(checked)
    refused = seccomp.ERRNO(errno_number)
    f = seccomp.SyscallFilter(refused if allow else seccomp.ALLOW)
    f.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.KILL_PROCESS)
    f.set_attr(seccomp.Attr.CTL_NNP, 0 if prctl.cap_effective.sys_admin else 1)
    for name in sorted(names):
        number = seccomp.resolve_syscall(seccomp.Arch.NATIVE, name)
        if number == syscalls.NR_SCMP_ERROR:
            continue  # newer than this libseccomp, or another architecture's: systemd leaves it out too
        try:
            f.add_rule(seccomp.ALLOW if allow else refused, number)
        except OSError:
            if number >= 0:
                raise
            # A negative number is a call this architecture lacks (socketcall on x86_64): nothing to filter.
    return f


def _pyseccomp():  # noqa: ANN202 - the module
    """pyseccomp, imported without its ctypes.util.find_library(), which runs ldconfig in a subprocess: a fork in
    the job's first process, which its limits (NPROC) may forbid. The sonames are those of every glibc system;
    elsewhere find_library looks as before."""
    import ctypes.util

    find = ctypes.util.find_library
    ctypes.util.find_library = lambda name: {"seccomp": "libseccomp.so.2", "c": "libc.so.6"}.get(name) or find(name)
    try:
        import pyseccomp
    finally:
        ctypes.util.find_library = find
    return pyseccomp
