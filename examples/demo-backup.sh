#!/usr/bin/env bash
# A small backup job in the pattern sandboxed-run exists for: set up state (a loop-mounted image),
# work on it, undo it in a trap. Run it under sandboxed-run and the mount and the loop device go
# away even when the trap never runs (SIGKILL):
#
#   sandboxed-run --tmpfs /mnt -- examples/demo-backup.sh SOURCE_DIR [IMAGE]
#
# SOURCE_DIR is copied into an ext4 image (default /var/tmp/sandboxed-run-demo/backup.img), which
# is created on first use and kept: it is the backup.
set -euo pipefail

source_dir=${1:?usage: demo-backup.sh SOURCE_DIR [IMAGE]}
image=${2:-/var/tmp/sandboxed-run-demo/backup.img}
target=/mnt/backup-target

cleanup() {
    status=$?
    trap - EXIT INT TERM
    if mountpoint -q "$target"; then
        sync
        umount "$target"
        echo "backup: unmounted $target"
    fi
    exit "$status"
}
# bash runs no EXIT trap when it dies of a signal it does not trap, so trap those too.
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ ! -f $image ]]; then
    mkdir -p "$(dirname "$image")"
    truncate -s 64M "$image"
    mkfs.ext4 -q -L backup "$image"
    echo "backup: created $image"
fi

mkdir -p "$target"
# -o loop attaches the loop device with autoclear: it detaches when this mount goes, even if we are killed.
mount -o loop "$image" "$target"
echo "backup: mounted $image on $target"

mkdir -p "$target/latest"
cp -a --no-preserve=ownership "$source_dir/." "$target/latest/"
sync
files=$(find "$target/latest" -type f | wc -l)
size=$(du -sh "$target/latest" | cut -f1)
echo "backup: copied $files files ($size) from $source_dir"
