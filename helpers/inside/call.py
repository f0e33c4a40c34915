"""job.call(func) inside the sandbox: a fresh interpreter that runs one pickled call and sends back
its outcome, over the socket it is passed (descriptor 3 unless told another).

Started by sandbox.Job.call with the caller's sys.path; functions of the caller's script pickle as
__main__.name, so the script (given only when the call refers to it) is loaded first as multiprocessing
does (as __mp_main__, so that its `if __name__ == "__main__":` block does not run again). While it loads,
loading_main names it: the sandbox API refuses to start a sandbox then (sandbox.api.calling), since that
is the script's unguarded top level running again. A failure to load is the call's outcome.
"""

from __future__ import annotations

import io
import pickle
import socket
import sys
import traceback

loading_main = ""


def main(script: str, fd: int = 3) -> None:
    global loading_main
    channel = socket.socket(fileno=fd)
    chunks = []
    while chunk := channel.recv(1 << 16):
        chunks.append(chunk)
    received = io.BytesIO(b"".join(chunks))
    try:
        argv = pickle.load(received)  # the caller's sys.argv, then the call
        if script:
            import runpy
            import types

            loading_main = script
            sys.argv[:] = argv  # what the script's top level reads, as in the caller
            try:
                module = types.ModuleType("__mp_main__")
                module.__dict__.update(runpy.run_path(script, run_name="__mp_main__"))
            finally:
                loading_main = ""
            sys.modules["__main__"] = sys.modules["__mp_main__"] = module
        func, args, kwargs = pickle.load(received)
        outcome = ("ok", func(*args, **kwargs))
    except BaseException as exc:  # noqa: BLE001 - every outcome goes back to the caller, who raises it
        outcome = ("error", exc, traceback.format_exc())
    try:
        data = pickle.dumps(outcome)
    except Exception as exc:  # noqa: BLE001 - an outcome that cannot travel is reported as such
        data = pickle.dumps(("error", TypeError(f"cannot send the outcome back: {exc}"), traceback.format_exc()))
    channel.sendall(data)
