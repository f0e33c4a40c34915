"""The whole life of a process we fork (a reaper, a user-namespace parent): it never returns into the
code of the process that forked it, whatever happens; a failure reaches the launcher as a Failed message."""

from __future__ import annotations

import _socket as socket
import os

from .shared import wire
from .shared.errors import EXIT_FAILURE, RESOURCE_ERRNOS, host_error

TYPE_CHECKING = False  # typing stays out of the spawn server's hot path
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn


def life(sock: socket.socket, body: Callable[[], int]) -> NoReturn:
    """Run body() in the forked child and exit with its status; sock is where a failure is reported."""
    code = EXIT_FAILURE
    try:
        code = body()
    except BaseException as exc:
        try:
            if isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS:
                message = str(host_error(exc, "sandbox helper failed"))
            else:
                message = f"sandbox helper failed: {exc!r}"
            wire.send(sock, wire.Failed(EXIT_FAILURE, message, 0))
        except BaseException:
            pass
    finally:
        os._exit(code)
