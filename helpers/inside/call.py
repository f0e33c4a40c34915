"""job.call(func) inside the sandbox: a fresh interpreter that runs one pickled call and sends back
its outcome, over the socket it gets as descriptor 3.

Started by sandbox.Job.call with the caller's sys.path; functions of the caller's script pickle as
__main__.name, so the script is loaded first as multiprocessing does (as __mp_main__, so that its
`if __name__ == "__main__":` block does not run again).
"""

from __future__ import annotations

import pickle
import socket
import sys
import traceback


def main(script: str) -> None:
    if script:
        import runpy
        import types

        module = types.ModuleType("__mp_main__")
        module.__dict__.update(runpy.run_path(script, run_name="__mp_main__"))
        sys.modules["__main__"] = sys.modules["__mp_main__"] = module
    channel = socket.socket(fileno=3)
    chunks = []
    while chunk := channel.recv(1 << 16):
        chunks.append(chunk)
    try:
        func, args, kwargs = pickle.loads(b"".join(chunks))
        outcome = ("ok", func(*args, **kwargs))
    except BaseException as exc:  # noqa: BLE001 - every outcome goes back to the caller, who raises it
        outcome = ("error", exc, traceback.format_exc())
    try:
        data = pickle.dumps(outcome)
    except Exception as exc:  # noqa: BLE001 - an outcome that cannot travel is reported as such
        data = pickle.dumps(("error", TypeError(f"cannot send the outcome back: {exc}"), traceback.format_exc()))
    channel.sendall(data)
