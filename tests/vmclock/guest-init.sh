#!/bin/busybox sh
# /init of the vmclock machine (xtask/src/vmclock_vm.rs): a guest with nothing shared
# with the host (QEMU refuses to migrate a guest with a 9p share mounted), booted from an
# initramfs that holds the repository's tests, clockguard's binaries, the tools the tests
# use and the kernel's ptp_vmclock module. It runs this suite with run-suite.sh, prints
# the tests' logs on the console (the host's only view of the guest) and powers off.
# The host migrates the guest when a test prints "CG-VMCLOCK-MIGRATE" on the console.
/bin/busybox --install -s /bin
export PATH=/usr/bin:/bin
mount -t proc none /proc
mount -t sysfs none /sys
mount -t devtmpfs none /dev
# bash's process substitution needs /dev/fd, which devtmpfs does not make.
ln -s /proc/self/fd /dev/fd
mkdir -p /run /tmp /dev/pts
mount -t tmpfs none /run
mount -t tmpfs none /tmp
mount -t bpf none /sys/fs/bpf
mount -t tracefs none /sys/kernel/tracing
mount -t debugfs none /sys/kernel/debug
ip link set lo up
insmod /lib/ptp_vmclock.ko || echo "guest-init: insmod ptp_vmclock.ko failed"
# What the package's udev rule (packaging/udev/60-clockguard-vmclock.rules) does; there is
# no udev here.
chmod 0444 /dev/vmclock0 2>/dev/null || true
export CG_IN_VM=1 CG_REPO=/repo CG_BIN_DIR=/repo/target/release HOME=/root
cd /repo
bash tests/run-suite.sh tests/vmclock
rc=$?
# Indented, so that no line of a log passes for the runner's own (PASS, the summary).
for log in target/test-logs/vmclock/*.log; do
    echo "    --- $log"
    sed 's/^/    | /' "$log"
done
echo "CG-VMCLOCK-EXIT $rc"
poweroff -f
