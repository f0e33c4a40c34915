"""Run a command as the kernels before Linux 6.5 do for one socket option: getsockopt(SOL_SOCKET,
SO_PEERPIDFD) fails with ENOPROTOOPT, the answer an older kernel gives for an option it does not know.
Nothing else changes. A seccomp filter (no_new_privs, as an unprivileged filter needs) makes the real
kernel say it, for the command and everything it starts: the reaper's peer check then takes the way it
takes on Debian 12's 6.1 (helpers/reaper/peers.py). x86_64 only.

usage: python before_6_5.py COMMAND [ARG]...
"""

import ctypes
import os
import struct
import sys

SOL_SOCKET, SO_PEERPIDFD, ENOPROTOOPT = 1, 77, 92
AUDIT_ARCH_X86_64, NR_GETSOCKOPT = 0xC000003E, 55
LOAD, JUMP_IF_EQUAL, RETURN = 0x20, 0x15, 0x06  # BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_RET|BPF_K
ALLOW, ERRNO = 0x7FFF0000, 0x00050000


def op(code: int, k: int, if_true: int = 0, if_false: int = 0) -> bytes:
    return struct.pack("=HBBI", code, if_true, if_false, k)


# seccomp_data: nr at 0, arch at 4, the arguments from 16 on, 8 bytes each.
PROGRAM = b"".join([
    op(LOAD, 4), op(JUMP_IF_EQUAL, AUDIT_ARCH_X86_64, 1, 0), op(RETURN, ALLOW),
    op(LOAD, 0), op(JUMP_IF_EQUAL, NR_GETSOCKOPT, 0, 5),
    op(LOAD, 24), op(JUMP_IF_EQUAL, SOL_SOCKET, 0, 3),
    op(LOAD, 32), op(JUMP_IF_EQUAL, SO_PEERPIDFD, 0, 1),
    op(RETURN, ERRNO | ENOPROTOOPT),
    op(RETURN, ALLOW),
])


def main() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    program = ctypes.create_string_buffer(PROGRAM)
    fprog = ctypes.create_string_buffer(struct.pack("=HxxxxxxQ", len(PROGRAM) // 8, ctypes.addressof(program)))
    if libc.prctl(38, 1, 0, 0, 0) or libc.prctl(22, 2, ctypes.addressof(fprog), 0, 0):  # NO_NEW_PRIVS, SECCOMP
        sys.exit(f"before_6_5: cannot install the filter: {os.strerror(ctypes.get_errno())}")
    os.execvp(sys.argv[1], sys.argv[1:])


if __name__ == "__main__":
    main()
