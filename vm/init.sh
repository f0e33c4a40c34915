#!/bin/sh
# /init of the throwaway VM's initramfs (busybox sh, PID 1).
#
# vm/setup copies this file into the initramfs and replaces the @...@ markers.
# The host (vm/run) shares two 9p file systems:
#   hostroot  the host's "/", read-only; becomes the lower layer of the root
#   xfer      a host temp dir, writable: cmd.sh in, stdout/stderr/status out
# Everything printed here goes to the kernel console, which vm/run keeps in a
# log file, so it never mixes with the command's output.

PATH=/bin
export PATH
KVER='@KVER@'
MODULE_TREE='@MODULE_TREE@'

# Prefixed with the guest uptime so boot time can be read off the log.
say() { read -r up _ </proc/uptime 2>/dev/null; echo "[$up] vm-init: $*" >/dev/console; }

halt_now() {
    # -f skips init scripts we don't have; sysrq is the fallback if the
    # reboot syscall is refused for some reason.
    poweroff -f
    echo o >/proc/sysrq-trigger
    sleep 5
}

die() {
    say "FATAL: $*"
    halt_now
}

mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev

# Drivers are modules in Debian's kernel; load them in dependency order
# (modules.load was written by vm/setup from modules.dep).
while read -r ko; do
    insmod "/modules/$ko" 2>/dev/console || say "insmod $ko failed"
done </modules.load

mkdir -p /host /xfer /rw /newroot
# Share the host root read-only; cache=loose keeps lookups in the guest's
# page/dentry cache, which matters a lot under TCG.
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro hostroot /host \
    || die "cannot mount host root over 9p"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 xfer /xfer \
    || die "cannot mount the xfer share over 9p"

# Writes land in guest RAM and vanish at poweroff.
mount -t tmpfs -o mode=0755 rw /rw
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work overlay /newroot \
    || die "cannot mount the overlay root"

R=/newroot
mount -t proc proc $R/proc
mount -t sysfs sys $R/sys
mount -t devtmpfs dev $R/dev
mkdir -p $R/dev/pts $R/dev/shm $R/dev/mapper
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts $R/dev/pts
mount -t tmpfs -o mode=1777 shm $R/dev/shm
mount -t tmpfs -o mode=0755 run $R/run
mkdir -p $R/run/lock $R/run/cryptsetup

# There is no udev: devtmpfs normally has these already, but make sure the
# nodes that losetup/cryptsetup/dmsetup open exist.
[ -e $R/dev/loop-control ] || mknod -m 660 $R/dev/loop-control c 10 237
i=0
while [ $i -lt 16 ]; do
    [ -e $R/dev/loop$i ] || mknod -m 660 $R/dev/loop$i b 7 $i
    i=$((i + 1))
done
[ -e $R/dev/mapper/control ] || mknod -m 600 $R/dev/mapper/control c 10 236
[ -e $R/dev/fd ] || ln -s /proc/self/fd $R/dev/fd
[ -e $R/dev/stdin ] || ln -s /proc/self/fd/0 $R/dev/stdin
[ -e $R/dev/stdout ] || ln -s /proc/self/fd/1 $R/dev/stdout
[ -e $R/dev/stderr ] || ln -s /proc/self/fd/2 $R/dev/stderr

# The guest kernel differs from the host's, so the host's /lib/modules is of
# no use; show the cached tree there so that `modprobe X` and the kernel's
# own request_module (crypto algorithms for dm-crypt, ...) work. Done with
# the host's tools inside the new root so /lib -> usr/lib resolves there.
chroot $R /bin/sh -c "mkdir -p /lib/modules/$KVER && mount --bind '$MODULE_TREE' /lib/modules/$KVER" \
    2>/dev/console || say "cannot bind the module tree"

# The kernel runs its modprobe helper (request_module: crypto algorithms for
# dm-crypt, ...) in kthreadd's root, which is this initramfs, not the chroot;
# hand those requests to the host's kmod in the new root.
echo /bin/modprobe-newroot >/proc/sys/kernel/modprobe

ifconfig lo 127.0.0.1 up 2>/dev/null
hostname sandboxed-run-vm

[ -f /xfer/cmd.sh ] || die "no /xfer/cmd.sh from the host"

# vm/run --systemd: systemd becomes PID 1 on the overlay root and runs the
# command itself (a service of vm/run's, which also writes the status and
# powers off). vm/run sends its unit files and masks as a tree of files to
# copy into the new root (xfer/systemd/root). The xfer share moves along
# into the new root: a virtio 9p channel can be mounted only once.
if [ -d /xfer/systemd/root ]; then
    X=/run/sandboxed-run-vm/xfer
    cp -a /xfer/systemd/root/. $R/ || die "cannot copy the systemd units into the new root"
    # The host's root may be a container's (/.dockerenv): systemd would then
    # take itself for a container's init and ignore the kernel command line.
    rm -f $R/.dockerenv $R/run/.containerenv
    mkdir -p $R$X
    mount --move /xfer $R$X || die "cannot move the xfer share into the new root"
    # Module requests from the kernel follow PID 1 into the new root, and
    # switch_root deletes this initramfs (and modprobe-newroot with it).
    echo /sbin/modprobe >/proc/sys/kernel/modprobe
    say "switching root to systemd"
    exec switch_root $R /lib/systemd/systemd
    die "switch_root to systemd failed"
fi

cmd=$(cat /xfer/cmd.sh)
say "starting command"
# The subshell makes ash print its "Killed" job notice (if the command dies
# by a signal) on the console instead of into the command's stderr.
(exec chroot $R /bin/sh -c "$cmd" </dev/null >/xfer/stdout 2>/xfer/stderr)
rc=$?
# Written last: its presence tells the host the command really finished.
echo "$rc" >/xfer/status.tmp && mv /xfer/status.tmp /xfer/status
say "command exited with $rc"
halt_now
