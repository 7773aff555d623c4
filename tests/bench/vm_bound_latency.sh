#!/usr/bin/env bash
# Bench, in the test VM (`cargo xtask bench` runs it once per kernel): how soon the clock
# error bound says what happened. clockguard (observe mode: every step allowed) keeps the
# bound against a reference on loopback; cg-clockcall steps the clock by +1 µs 200 times,
# 20 ms apart, and times each from the syscall's return to the ClockBound segment showing
# a new disruption marker (ClockBound's own daemon polls chrony once a second).
# Prints one "RESULT {json}" line: p50/p99/max in µs, and the steps whose marker did not
# change within a second.
set -euo pipefail
export CG_TEST_TMP=/run/cg-bench-bound
mkdir -p "$CG_TEST_TMP"
mountpoint -q "$CG_TEST_TMP" || mount -t tmpfs none "$CG_TEST_TMP"
source "$CG_REPO/tests/vm/lib.sh"
need_vm
STEPS=${CG_BENCH_BOUND_STEPS:-200}

PARAMS="$CG_TEST_TMP/ref.json"
start_reference "$PARAMS" "$CG_TEST_TMP/ref.log" --listen 127.0.0.1:12320 --offset-s 0
ref_pid=$REF_PID
trap 'kill "$ref_pid" 2>/dev/null; stop_daemon' EXIT
SEGMENT="$CG_TEST_TMP/clockbound/shm0"
cat >"$CG_TEST_TMP/bound.toml" <<EOF2
mode = "observe"
[ntp]
servers = ["127.0.0.1:12320"]
[bound]
path = "$SEGMENT"
EOF2
start_daemon --config "$CG_TEST_TMP/bound.toml"
wait_now 300 '.status == "synchronized"' >/dev/null || true
latency=$("$CALL" bound-latency "$STEPS" --segment "$SEGMENT")
stop_daemon
echo "$latency" | jq -c '{steps, missed, p50_us, p99_us, max_us}' | sed 's/^/RESULT /'
