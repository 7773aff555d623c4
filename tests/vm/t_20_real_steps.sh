# Real programs that step the clock are each journaled once, attributed to the right
# process, with delta_ns within 5 ms of the real jump (REALTIME - MONOTONIC before/after).
source "$(dirname "$0")/lib.sh"
need_vm
start_daemon
TOL=5000000

# check_one JQ_FILTER REAL_JUMP_NS LABEL: exactly one step record matches; its delta is right.
check_one() {
    local filter=$1 real=$2 label=$3
    wait_records 1 "$filter"
    sleep 0.5
    local recs n delta
    recs=$(audit_json | jq -c "select($filter)")
    n=$(echo "$recs" | wc -l)
    [[ "$n" -eq 1 ]] || { echo "$recs"; fail "$label: $n records, want exactly 1"; }
    echo "$recs" | jq .
    delta=$(echo "$recs" | jq '.delta_ns')
    assert_close "$delta" "$real" "$TOL"
    echo "$recs" | jq -e '.result == "0" and .clock_was_set == true and .source == "syscall"' >/dev/null \
        || fail "$label: result/clock_was_set/source wrong"
    echo "METRIC $label real_jump_ns=$real delta_ns=$delta error_ns=$(( delta - real ))"
}

# 1. date -s: five seconds ahead.
before=$(offset_ns)
date -s "@$(( $(date +%s) + 5 ))" >/dev/null
after=$(offset_ns)
check_one '.comm == "date" and .kind == "step"' $(( after - before )) "date-s"
# -s and all(): jq 1.6's -e judges only the last input, whatever matched before it.
audit_json | jq -e -s 'map(select(.comm == "date")) | length == 1 and all(.[]; .syscall == "clock_settime" and .exe == "/usr/bin/date" and .parent_comm == "bash" and .ppid != null)' >/dev/null \
    || fail "date -s attribution: $(audit_json | jq -c 'select(.comm == "date")')"

# 2. An adjtimex(ADJ_SETOFFSET) caller: three seconds back.
before=$(offset_ns)
"$CALL" setoffset -3000000000
after=$(offset_ns)
check_one '.comm == "cg-clockcall" and .kind == "step"' $(( after - before )) "adjtimex-setoffset"
# glibc's adjtimex() enters the kernel as clock_adjtime(CLOCK_REALTIME).
audit_json | jq -e -s 'map(select(.comm == "cg-clockcall" and .kind == "step")) | length >= 1 and all(.[]; (.syscall == "adjtimex" or .syscall == "clock_adjtime") and .clock == "CLOCK_REALTIME" and any(.requested.modes[]; . == "ADJ_SETOFFSET") and .requested.setoffset_ns == -3000000000)' >/dev/null \
    || fail "setoffset request not decoded"

# 3. hwclock --hctosys: the system clock from the RTC (which kept the real time).
before=$(offset_ns)
hwclock --hctosys
after=$(offset_ns)
check_one '.comm == "hwclock" and .kind == "step"' $(( after - before )) "hwclock-hctosys"

# 4. qemu-ga guest-set-time: the guest agent sets the time it is given (7 s ahead).
qga_sock="$CG_TEST_TMP/qga.sock"
qemu-ga -m unix-listen -p "$qga_sock" -t "$CG_TEST_TMP" -f "$CG_TEST_TMP/qga.pid" &
qga_pid=$!
for _ in $(seq 1 100); do [[ -S "$qga_sock" ]] && break; sleep 0.1; done
[[ -S "$qga_sock" ]] || fail "qemu-ga did not listen"
target_ns=$(( ($(date +%s) + 7) * 1000000000 ))
before=$(offset_ns)
python3 - "$qga_sock" "$target_ns" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(json.dumps({"execute": "guest-set-time", "arguments": {"time": int(sys.argv[2])}}).encode() + b"\n")
reply = s.makefile().readline()
print("qemu-ga:", reply.strip())
assert "error" not in json.loads(reply), reply
PY
after=$(offset_ns)
kill "$qga_pid" 2>/dev/null || true
check_one '.comm == "qemu-ga" and .kind == "step"' $(( after - before )) "qemu-ga-set-time"

# Every jump above was explained by a kernel hook: the fallback journaled none of them.
n=$(audit_json | jq -c 'select(.source == "fallback")' | wc -l)
[[ "$n" -eq 0 ]] || fail "fallback journaled $n jumps the hooks already reported"
# Put the clock back on the RTC's time for the next tests.
hwclock --hctosys
echo ok
