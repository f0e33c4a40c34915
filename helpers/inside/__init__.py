"""Commands that scripts run inside a sandbox of ours: sandbox-mount-image, sandbox-open-luks."""
