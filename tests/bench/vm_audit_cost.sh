#!/usr/bin/env bash
# Bench, in the test VM (`cargo xtask bench` runs it once per kernel): what the audit costs
# a clock syscall, and how soon it is journaled, the VM twins of the host rows
# "clock_settime cost" and "syscall to journal latency".
#   settime-invalid  N clock_settime calls the kernel rejects (EINVAL, no clock change),
#                    without clockguard, with it (observe mode: the kernel counts repeats
#                    after each interval's first 8), and with it sending every call in
#                    full (repeats_in_full = 0), twice each
#   latency          M calls, each timed from the syscall to its record in the journal
#                    (every call in full)
# Prints one "RESULT {json}" line: the ns per call of each round, and the latency's
# p50/p99 in µs.
set -euo pipefail
export CG_TEST_TMP=/run/cg-bench-audit
mkdir -p "$CG_TEST_TMP"
mountpoint -q "$CG_TEST_TMP" || mount -t tmpfs none "$CG_TEST_TMP"
source "$CG_REPO/tests/vm/lib.sh"
need_vm
CALLS=${CG_BENCH_SETTIME_CALLS:-20000}
LATENCY_SAMPLES=${CG_BENCH_LATENCY_SAMPLES:-2000}

ns_per_call() {
    local out
    out=$("$CALL" settime-invalid "$CALLS")
    echo "$out" | jq -e --argjson n "$CALLS" '.einval == $n' >/dev/null ||
        fail "not every call was rejected with EINVAL: $out"
    echo "$out" | jq .ns_per_call
}

EVERY_CALL_IN_FULL="$CG_TEST_TMP/every-call-in-full.toml"
printf '[audit]\nrepeats_in_full = 0\n' >"$EVERY_CALL_IN_FULL"
off=()
on=()
on_full=()
for _ in 1 2; do
    off+=("$(ns_per_call)")
    start_daemon
    on+=("$(ns_per_call)")
    stop_daemon
    start_daemon --config "$EVERY_CALL_IN_FULL"
    on_full+=("$(ns_per_call)")
    stop_daemon
done
start_daemon --config "$EVERY_CALL_IN_FULL"
latency=$("$CALL" latency "$LATENCY_SAMPLES" --runtime-dir "$RUNTIME")
stop_daemon
jq -cn --argjson calls "$CALLS" --argjson latency "$latency" \
    --argjson off "[$(IFS=,; echo "${off[*]}")]" --argjson on "[$(IFS=,; echo "${on[*]}")]" \
    --argjson on_full "[$(IFS=,; echo "${on_full[*]}")]" \
    '{calls: $calls, settime_ns_off: $off, settime_ns_on: $on, settime_ns_on_full: $on_full, latency_p50_us: $latency.p50_us, latency_p99_us: $latency.p99_us, latency: $latency}' |
    sed 's/^/RESULT /'
