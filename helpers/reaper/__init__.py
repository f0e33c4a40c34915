"""PID 1 of each sandbox: main.py is its life; mounts.py, commands.py and stopping.py its parts."""
