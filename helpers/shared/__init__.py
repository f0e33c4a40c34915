"""What every process of ours shares, and imports nothing above it: Linux calls (linux), the option
table and SandboxSpec (options), one command (command), the messages between processes (wire),
errors, signals, relays, hooks, the status stream, and the environment marks of a job (marks)."""
