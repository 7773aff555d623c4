# Guard mode with real programs: date -s, hwclock --hctosys, a raw clock_settime caller and
# an adjtimex(ADJ_SETOFFSET) caller are each refused (the caller sees EPERM) and journaled
# as denied with the requested delta; a 1 ms sampler sees no step and no backward move.
# qemu-ga's refused +2 s step is slewed in (2 s ± 50 ms within 60 s, no jump). An allowed
# executable steps normally, and no longer once a reload (SIGHUP) took it off the list.
# With ebpf_log_level = "info" the LSM programs say each refusal in the daemon's log (and
# not what they allowed: that is debug).
source "$(dirname "$0")/lib.sh"
need_vm

# An allowed executable: its own inode (a copy), so cg-clockcall itself stays refused.
ALLOWED="$CG_TEST_TMP/cg-allowed"
cp "$CALL" "$ALLOWED"
cat >"$CG_TEST_TMP/guard.toml" <<EOF
mode = "guard"
ebpf_log_level = "info"
[guard]
allow = ["$ALLOWED"]
slew_instead = ["/usr/sbin/qemu-ga"]
defer_to_time_services = false
EOF
start_daemon --config "$CG_TEST_TMP/guard.toml"
status_json | jq '.enforcement | del(.policy)'
status_json | jq -e '.mode == "guard" and .enforcement.active == true and (.enforcement.gaps | length) == 0' >/dev/null \
    || fail "guard enforcement not active: $(status_json | jq -c '.enforcement, [.hooks[] | select(.attached | not)]')"
status_json | jq -e '[.hooks[] | select(.name == "settime" or .name == "capable" or .name == "do_adjtimex" or .name == "do_adjtimex_exit") | .attached] == [true, true, true, true]' >/dev/null \
    || fail "guard hooks: $(status_json | jq -c '.hooks')"

STOP="$CG_TEST_TMP/sampler.stop"
"$CALL" sample "$STOP" >"$CG_TEST_TMP/sampler.json" &
sampler=$!
offset0=$(offset_ns)

# Asked for "now + 5 s" to the ns: the requested delta is 5 s less date's start-up time.
target=$(( $(date +%s%N) + 5000000000 ))
expect_refused date-s date -s "@$(( target / 1000000000 )).$(printf %09d $(( target % 1000000000 )))"
expect_refused hwclock hwclock --hctosys
expect_refused clock_settime "$CALL" settime-by 3000000000
expect_refused adjtimex-setoffset "$CALL" setoffset -3000000000

# delta_ns is measured (under TCG the clock reads jitter by tens of µs): no step is < 1 ms.
# When the boot found the TSCs unsynchronised and fell back to an emulated HPET or ACPI PM
# timer, each clock read is an MMIO exit, and the reads around a call spread further (a
# refused hwclock once measured 1.4 ms on 6.1 with hpet): 5 ms there, still far below the
# steps asked for here, whose verdict, result and clock_was_set are checked as well.
case "$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)" in
    tsc | kvm-clock) read_jitter_ns=1000000 ;;
    *) read_jitter_ns=5000000 ;;
esac

# check_denied LABEL JQ_FILTER REQUESTED_NS TOLERANCE_NS
check_denied() {
    local label=$1 filter=$2 requested=$3 tol=$4
    wait_records 1 "$filter and .verdict == \"denied\""
    local rec
    rec=$(audit_json | jq -c "select($filter and .verdict == \"denied\")" | tail -1)
    echo "$rec" | jq -e --argjson jitter "$read_jitter_ns" '.result == "EPERM" and .clock_was_set == false and (.delta_ns | fabs) < $jitter and .guard.class == "other" and .guard.judged == "step"' >/dev/null \
        || fail "$label: $rec"
    if [[ "$requested" != "-" ]]; then
        assert_close "$(echo "$rec" | jq .requested_delta_ns)" "$requested" "$tol"
    fi
    echo "METRIC guard-$label requested_delta_ns=$(echo "$rec" | jq .requested_delta_ns)"
}
check_denied date-s '.comm == "date"' 5000000000 500000000
# hwclock asks for the RTC's time: the step it wanted depends on the RTC, so only its verdict.
check_denied hwclock '.comm == "hwclock" and .kind == "step"' - 0
check_denied clock_settime '.comm == "cg-clockcall" and .syscall == "clock_settime"' 3000000000 50000000
check_denied adjtimex-setoffset '.comm == "cg-clockcall" and .kind == "step" and .syscall != "clock_settime"' -3000000000 0

# The eBPF programs' own log (aya-log): one line per refusal, read into the daemon's log.
refused_lines=0
for _ in $(seq 1 50); do
    refused_lines=$(grep -c "guard: refused change 1 (1 step, 2 discipline) by tgid" "$CG_TEST_TMP/daemon.log" || true)
    (( refused_lines >= 4 )) && break
    sleep 0.1
done
(( refused_lines >= 4 )) || fail "eBPF log: $refused_lines refusal lines, expected 4: $(grep -i ebpf "$CG_TEST_TMP/daemon.log" | tail -5)"
echo "METRIC guard-ebpf-log refused_lines=$refused_lines"

# A frequency change is not a step: it goes through (exclusive_discipline is off).
"$CALL" freq 10 >/dev/null || fail "a frequency change was refused"
"$CALL" freq 0 >/dev/null

# qemu-ga: its refused step is slewed in.
qga_sock="$CG_TEST_TMP/qga.sock"
qemu-ga -m unix-listen -p "$qga_sock" -t "$CG_TEST_TMP" -f "$CG_TEST_TMP/qga.pid" &
qga_pid=$!
for _ in $(seq 1 100); do [[ -S "$qga_sock" ]] && break; sleep 0.1; done
[[ -S "$qga_sock" ]] || fail "qemu-ga did not listen"
raw0=$("$CALL" offset-raw | jq .realtime_minus_raw_ns)
# "now + 2 s", taken right before the request (python starts slowly under TCG).
python3 - "$qga_sock" <<'PY' || true
import json, socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
target = time.time_ns() + 2_000_000_000
s.sendall(json.dumps({"execute": "guest-set-time", "arguments": {"time": target}}).encode() + b"\n")
print("qemu-ga:", s.makefile().readline().strip())
PY
kill "$qga_pid" 2>/dev/null || true
wait_records 1 '.comm == "qemu-ga" and .verdict == "slewed"'
rec=$(audit_json | jq -c 'select(.comm == "qemu-ga" and .verdict == "slewed")' | tail -1)
echo "$rec" | jq -c '{verdict, result, requested_delta_ns, slew, guard}'
echo "$rec" | jq -e '.result == "EPERM" and .guard.class == "slew_instead"' >/dev/null || fail "qemu-ga record: $rec"
wanted=$(echo "$rec" | jq .requested_delta_ns)
# 2 s less qemu-ga's handling time (tens of ms under TCG).
assert_close "$wanted" 2000000000 200000000
start=$(date +%s%N)
for _ in $(seq 1 600); do
    [[ "$(status_json | jq '.enforcement.slew.active')" == false ]] && break
    sleep 0.1
done
took_ms=$(( ($(date +%s%N) - start) / 1000000 ))
gained=$(( $("$CALL" offset-raw | jq .realtime_minus_raw_ns) - raw0 ))
status_json | jq -c '.enforcement.slew'
echo "METRIC guard-slew-2s requested_ns=$wanted gained_ns=$gained took_ms=$took_ms"
[[ "$(status_json | jq '.enforcement.slew.active')" == false ]] || fail "slew still active after 60 s"
# The clock gained what the agent asked for.
assert_close "$gained" "$wanted" 50000000

touch "$STOP"
wait "$sampler"
cat "$CG_TEST_TMP/sampler.json"
assert_no_step "$CG_TEST_TMP/sampler.json"
# Nothing but the slew moved the clock: REALTIME - MONOTONIC is where it was.
assert_close "$(offset_ns)" "$offset0" 50000000
echo "METRIC guard-sampler $(jq -r '"samples=\(.samples) max_step_ns=\(.max_step_ns) backward_moves=\(.backward_moves)"' "$CG_TEST_TMP/sampler.json")"

# An allowed executable steps normally.
before=$(offset_ns)
"$ALLOWED" settime-by 1000000000 >/dev/null || fail "the allowed executable was refused"
after=$(offset_ns)
assert_close $(( after - before )) 1000000000 50000000
wait_records 1 '.comm == "cg-allowed" and .verdict == "allowed"'
# Read once, judged and shown from the same copy (a failure once showed a record that passes).
recs=$(audit_json | jq -c 'select(.comm == "cg-allowed")')
echo "$recs" | jq -e -s 'length == 1 and .[0].verdict == "allowed" and .[0].guard.class == "allow" and .[0].clock_was_set == true' >/dev/null \
    || fail "allowed record (status $?): $recs"
"$ALLOWED" settime-by -1000000000 >/dev/null
# Allowed changes are debug in the eBPF log: at info the programs do not send them.
! grep -q "guard: allowed change" "$CG_TEST_TMP/daemon.log" \
    || fail "eBPF log at info has debug lines: $(grep "guard: allowed" "$CG_TEST_TMP/daemon.log" | head -2)"

# exclusive_discipline: only clockguard may change the frequency, tick or PLL offset; not
# even an allowed executable. Reads still pass. Turned on by a reload of the running
# daemon: the kernel's policy changes at once.
printf 'exclusive_discipline = true\n' >>"$CG_TEST_TMP/guard.toml"
out=$("$CG" reload --runtime-dir "$RUNTIME") || fail "reload: $out"
echo "$out"
[[ "$out" == *"applied guard.exclusive_discipline;"* ]] || fail "reload said: $out"
status_json | jq -e '.enforcement.active and .enforcement.exclusive_discipline' >/dev/null \
    || fail "exclusive discipline not on: $(status_json | jq -c .enforcement)"
expect_refused freq-other "$CALL" freq 10
expect_refused freq-allowed "$ALLOWED" freq 10
"$CALL" adjtimex-read 1 | jq -e '.ok == 1' >/dev/null || fail "a read was refused"
wait_records 2 '.kind == "frequency" and .verdict == "denied" and .guard.judged == "discipline"'
# Taken off the allow list by SIGHUP, the executable may no longer step.
sed -i "s|^allow = .*|allow = []|" "$CG_TEST_TMP/guard.toml"
kill -HUP "$DAEMON_PID"
for _ in $(seq 1 50); do
    [[ "$(status_json | jq '[.enforcement.policy[] | select(.class == "allow")] | length')" == 0 ]] && break
    sleep 0.1
done
expect_refused step-after-reload "$ALLOWED" settime-by 1000000000
wait_records 1 '.comm == "cg-allowed" and .verdict == "denied"'

# The guard lives as long as the daemon (pinning it is a later step): stopped, it refuses
# nothing.
stop_daemon
"$CALL" settime-by 0 >/dev/null || fail "still refused after the daemon stopped"
echo ok
