"""The processes of sandboxed-run, and the layer they share (installed as `sandboxed_run_helpers`).

  shared/    every process: Linux calls, the option table, the wire, errors, signals, hooks
  launch.py  a launcher's side of starting a reaper (the command, the spawn server)
  forked.py  the life of a process we fork: never back into the forking process's code
  reaper/    PID 1 of each sandbox
  userns.py  the reaper's parent when a user namespace is needed
  server.py  the API's spawn server
  monitor.py the command's hook monitor
  inside/    commands that scripts run inside a sandbox

Nothing here imports `sandbox` (the caller's side); `sandbox` imports from here.
"""
