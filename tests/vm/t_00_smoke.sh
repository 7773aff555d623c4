#!/usr/bin/env bash
# Smoke test: we run inside the test VM, and the VM kernel has what enforcement needs
# (BTF, BPF LSM). Fails only if not inside the VM; otherwise reports what is there.
set -uo pipefail

if [[ "${CG_IN_VM:-0}" != 1 ]]; then
    echo "CG_IN_VM is not 1: this suite must run inside the test VM (cargo xtask vm / test)"
    exit 1
fi
if ! grep -qw virtme /proc/cmdline 2>/dev/null; then
    echo "warning: /proc/cmdline does not mention virtme: $(cat /proc/cmdline)"
fi
echo "kernel: $(uname -a)"

if [[ -e /sys/kernel/btf/vmlinux ]]; then
    echo "ok: /sys/kernel/btf/vmlinux exists"
else
    echo "WARNING: /sys/kernel/btf/vmlinux is missing (no BTF: fentry/LSM/tp_btf cannot load)"
fi

lsm="$(cat /sys/kernel/security/lsm 2>/dev/null || echo '<cannot read /sys/kernel/security/lsm>')"
if tr ',' '\n' <<<"$lsm" | grep -qx bpf; then
    echo "ok: bpf is in the LSM list: $lsm"
else
    echo "WARNING: bpf is not in the LSM list (BPF-LSM enforcement unavailable); LSMs: $lsm"
fi

for f in "$CG_BIN_DIR/clockguard" "$CG_BIN_DIR/cg-clockcall"; do
    if [[ -x "$f" ]]; then echo "ok: $f"; else echo "note: $f not built"; fi
done
exit 0
