"""The Python API, as it runs in the caller's program: popen.py (Popen, run), job.py (Job), aio.py
(asyncio), keywords.py (the options from the table), collect.py (a finished sandbox's hooks and
finished event), spawner.py (the connection to the spawn server), pytest_plugin.py."""
