#!/usr/bin/env bash
# A real backup in the pattern sandboxed-run exists for: open the target, copy into it, close it in a
# trap. Run it under sandboxed-run and nothing is left behind however it ends, SIGKILL included:
#
#   sandboxed-run --tmpfs /mnt -- examples/backup.sh SOURCE_DIR [IMAGE]
#
# The target is an image file, created on first use and kept (it is the backup):
#   - LUKS (key file IMAGE.key, made on first use) where the kernel has device-mapper and cryptsetup
#     is installed, opened and mounted with sandbox-open-luks (its removal is scheduled at once);
#   - otherwise a plain ext4 image, mounted with sandbox-mount-image (autoclear loop device).
# BACKUP_KIND=luks|plain forces one; BACKUP_BWLIMIT=KBPS slows rsync down (to try Ctrl+C mid-copy).
# Default IMAGE: /var/tmp/sandboxed-run-backup/backup.img (.luks for LUKS).
set -euo pipefail

source_dir=${1:?usage: backup.sh SOURCE_DIR [IMAGE]}
target=/mnt/backup-target
name=sandboxed-run-backup
# sandboxed-run tells us where its helpers are (a venv's bin directory is rarely on PATH).
PATH=$PATH:${SANDBOXED_RUN_BIN:-/usr/local/bin}:/usr/sbin:/sbin

have_device_mapper() {
    [[ -e /dev/mapper/control ]] || grep -qw device-mapper /proc/misc 2>/dev/null
}
kind=${BACKUP_KIND:-auto}
if [[ $kind == auto ]]; then
    if have_device_mapper && command -v cryptsetup >/dev/null; then kind=luks; else kind=plain; fi
fi
default_image=/var/tmp/sandboxed-run-backup/backup.img
[[ $kind == luks ]] && default_image=/var/tmp/sandboxed-run-backup/backup.luks
image=${2:-$default_image}
command -v rsync >/dev/null || { echo "backup: rsync is not installed" >&2; exit 1; }

cleanup() {
    status=$?
    trap - EXIT INT TERM
    if mountpoint -q "$target"; then
        sync
        # After a Ctrl+C rsync's own helper processes may still be exiting and hold the mount for a moment.
        for _ in $(seq 50); do
            umount "$target" 2>/dev/null && break
            sleep 0.1
        done
        if mountpoint -q "$target"; then
            echo "backup: $target still busy; the sandbox drops it when it ends" >&2
        else
            echo "backup: unmounted $target"
        fi
    fi
    # sandbox-open-luks scheduled the mapping's removal: the unmount removed it; this is for older runs.
    if [[ $kind == luks && -e /dev/mapper/$name ]]; then
        cryptsetup close "$name" 2>/dev/null || true
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
    if [[ $kind == luks ]]; then
        key=$image.key
        [[ -f $key ]] || (umask 077 && head -c 64 /dev/urandom > "$key")
        cryptsetup luksFormat --batch-mode --type luks2 --key-file "$key" "$image"
        cryptsetup open --key-file "$key" "$image" "$name"
        mkfs.ext4 -q -L backup "/dev/mapper/$name"
        cryptsetup close "$name"
    else
        mkfs.ext4 -q -L backup "$image"
    fi
    echo "backup: created $kind image $image"
fi

mkdir -p "$target"
if [[ $kind == luks ]]; then
    sandbox-open-luks --key-file "$image.key" "$image" "$name" "$target"
else
    sandbox-mount-image "$image" "$target"
fi
echo "backup: mounted $kind image $image on $target"

rsync_opts=(-a --delete --no-owner --no-group)
[[ -n ${BACKUP_BWLIMIT:-} ]] && rsync_opts+=(--bwlimit="$BACKUP_BWLIMIT")
mkdir -p "$target/latest"
echo "backup: copying $source_dir"
rsync "${rsync_opts[@]}" "$source_dir/" "$target/latest/"
sync
files=$(find "$target/latest" -type f | wc -l)
size=$(du -sh "$target/latest" | cut -f1)
echo "backup: copied $files files ($size) from $source_dir"
