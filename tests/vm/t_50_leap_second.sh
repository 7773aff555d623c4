# An in-kernel change: a leap second inserted at midnight UTC. No syscall makes it (the
# kernel's timekeeping does, then clock_was_set runs from a workqueue), so it is journaled
# with source "kernel", a kernel stack, and delta_ns = -1 s measured through the TAI offset.
source "$(dirname "$0")/lib.sh"
need_vm
cleanup() {
    "$CALL" set-status 0x40 >/dev/null || true   # STA_UNSYNC: no further leap tonight
    hwclock --hctosys || true
    stop_daemon
}
trap cleanup EXIT
start_daemon
date -u -s "$(date -u +%F) 23:59:57" >/dev/null
"$CALL" set-status 0x10      # STA_INS: insert a leap second at the next midnight UTC
before=$(offset_ns)
sleep 5
after=$(offset_ns)
real=$(( after - before ))
echo "REALTIME - MONOTONIC moved by $real ns across midnight"
assert_close "$real" -1000000000 5000000
wait_records 1 '.source == "kernel"'
rec=$(audit_json | jq -c 'select(.source == "kernel")')
echo "$rec" | jq .
[[ $(echo "$rec" | wc -l) -eq 1 ]] || fail "want exactly one in-kernel record"
delta=$(echo "$rec" | jq .delta_ns)
assert_close "$delta" "$real" 5000000
echo "$rec" | jq -e '.clock_was_set and .kind == "step" and .syscall == null and (.stack | length > 0)' >/dev/null \
    || fail "kernel record lacks its stack or flags"
echo "$rec" | jq -e '(.stack[0] | startswith("clock_was_set+")) and all(.stack[]; test("\\[bpf\\]") | not)' >/dev/null \
    || fail "the stack must start at clock_was_set, without clockguard's own frames"
echo "$rec" | jq -e '.requested.clocks == ["CLOCK_REALTIME", "CLOCK_TAI"]' >/dev/null || fail "bases not decoded"
echo "METRIC leap-second real_jump_ns=$real delta_ns=$delta comm=$(echo "$rec" | jq -r .comm)"
n=$(audit_json | jq -c 'select(.source == "fallback")' | wc -l)
[[ "$n" -eq 0 ]] || fail "the fallback journaled a jump the kernel hook reported"
echo ok
