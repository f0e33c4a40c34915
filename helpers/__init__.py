"""The helper processes of sandboxed-run: the reaper (PID 1 of each sandbox) and the API's spawn server.

Installed as `sandboxed_run_helpers`, a name no other project will use.
"""
