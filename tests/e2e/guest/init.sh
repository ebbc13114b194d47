#!/bin/busybox sh
# PID 1 of the e2e guest: mounts, loads modules, runs one scenario script in a chroot of the host
# root, reports through the out share, powers off. Never writes to the host root (shared read-only).
#
# Layout inside the guest (tests/e2e/harness.py is the other half of this contract):
#   /                 the host's root over 9p (tag "host"), read-only, page cache "loose"
#   /proc /sys /dev   the guest kernel's own; debugfs and tracefs under /sys/kernel
#   /run              a tmpfs (the only scratch space; TMPDIR and HOME point into it)
#   /run/hwpoisond-e2e/out   the writable out share (tag "out"): scenario.sh in, results out
/bin/busybox mkdir -p /bin /proc /sys /dev /newroot
/bin/busybox --install -s /bin
export PATH=/bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "e2e-init: kernel $(uname -r)"

# load-order is modules.dep's closure of the modules we need, dependencies first.
while read -r ko; do
    insmod "/modules/$ko" || echo "e2e-init: insmod $ko failed"
done < /modules/load-order

# msize: the 6.1 default of 8 KiB makes every Python import a dozen round trips.
if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=loose,ro host /newroot; then
    echo "e2e-init: cannot mount the host root"
    poweroff -f
fi
r=/newroot
out=/run/hwpoisond-e2e/out
mount -t proc proc $r/proc
mount -t sysfs sysfs $r/sys
mount -t devtmpfs devtmpfs $r/dev
mkdir -p $r/dev/shm $r/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $r/dev/shm
mount -t devpts devpts $r/dev/pts
mount -t debugfs debugfs $r/sys/kernel/debug
mount -t tracefs tracefs $r/sys/kernel/tracing
# systemd-journald (scenario "two sources") refuses to start without a cgroup hierarchy.
mount -t cgroup2 cgroup2 $r/sys/fs/cgroup
mount -t tmpfs -o mode=0755 tmpfs $r/run
mkdir -p $r$out $r/run/tmp
chmod 1777 $r/run/tmp
# cache=mmap: SQLite in WAL mode maps its -shm file shared, which 9p allows only in this mode.
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=mmap out $r$out
# The metrics endpoint listens on 127.0.0.1.
ip link set lo up
hostname hwpoisond-e2e

echo "e2e-init: running scenario"
cat /proc/uptime > $r$out/boot_uptime
chroot $r /usr/bin/env -i \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/run/tmp TMPDIR=/run/tmp PYTHONDONTWRITEBYTECODE=1 LANG=C.UTF-8 \
    E2E_OUT=$out \
    /bin/sh $out/scenario.sh > $r$out/scenario.log 2>&1
echo $? > $r$out/exit_code
echo "e2e-init: scenario exit code $(cat $r$out/exit_code)"
dmesg > $r$out/dmesg.txt
sync
umount $r$out
poweroff -f
