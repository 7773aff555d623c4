# Sourced in the systemd test machine before its command (xtask/src/vm.rs, Machine::Systemd).
# The command runs in serial-getty@ttyS0.service, where virtme-ng's init has just set up
# its own mounts; two of its habits are undone here so the tests see the machine as an
# operator does.
# 1. It mounts fresh tmpfs over /var/log (and similar), after journald opened its files
#    there: journalctl would find "No journal files" although journald is writing.
for m in $(findmnt -rn -t tmpfs -o TARGET | grep -E '^/var/' | sort -r); do
    umount "$m" 2>/dev/null || echo "systemd-vm: cannot unmount the tmpfs on $m" >&2
done
# 2. The getty may start before the boot is over: wait for it, and say what failed.
state=$(systemctl is-system-running --wait 2>/dev/null || true)
if [ "$state" != running ]; then
    echo "systemd-vm: the system is $state; failed units:" >&2
    systemctl --failed --no-legend --no-pager >&2
fi
