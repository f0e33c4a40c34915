#!/bin/sh
# Installs what benchmarks/run.py compares against: bubblewrap (bwrap). unshare comes with
# util-linux, which every Debian has. Safe to run again: does nothing when bwrap is there.
set -eu

if command -v bwrap >/dev/null 2>&1; then
    echo "setup.sh: bubblewrap already installed ($(bwrap --version))"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y bubblewrap
