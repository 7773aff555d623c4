# A leap second from the NTP source, slewed, never stepped. The VM's clock is put 25 s
# before 2027-01-01T00:00:00Z (the daemon took the announcement 7 to 9 s after that on
# the three kernels: LEAD_S leaves about 3 times that); the reference (cg-ntpref)
# announces an inserted second for that midnight and then applies it as a kernel does
# (23:59:59 twice). clockguard in guard mode says so before it (`tracking`: leap status
# "insert second"), never hands it to the kernel (STA_INS would step the clock back), and
# after it follows UTC by slewing 1 s back: within 1 ms of the reference soon after, with
# no step and no backward move (1 ms sampler), and the source's filter keeps its line
# through the leap (no reset).
source "$(dirname "$0")/lib.sh"
need_vm

REF="$CG_BIN_DIR/cg-ntpref"
PARAMS="$CG_TEST_TMP/ref.json"
MIDNIGHT=1798761600 # 2027-01-01T00:00:00Z
STA_INS=0x10

# Put the clock back where it was (plus the time the test took) at the end.
saved_offset=$(offset_ns)
ref_pid=""
restore() {
    stop_daemon
    [[ -z "$ref_pid" ]] || kill "$ref_pid" 2>/dev/null || true
    "$CALL" settime-by $(( saved_offset - $(offset_ns) )) >/dev/null || true
    "$CALL" freq 0 >/dev/null || true
}
trap restore EXIT
"$CALL" freq 0 >/dev/null
LEAD_S=25
"$CALL" settime-by $(( (MIDNIGHT - LEAD_S) * 1000000000 - $(date +%s%N) )) >/dev/null
echo "clock set to $(date -u +%FT%TZ)"

start_reference "$PARAMS" "$CG_TEST_TMP/ref.log" --listen 127.0.0.1:12372 --leap ins --leap-at "$MIDNIGHT"
ref_pid=$REF_PID

cat >"$CG_TEST_TMP/ntp.toml" <<EOF2
mode = "guard"
log_level = "info"
[guard]
defer_to_time_services = false
[ntp]
servers = ["127.0.0.1:12372"]
minpoll = 4
EOF2
STOP="$CG_TEST_TMP/sampler.stop"
"$CALL" sample "$STOP" >"$CG_TEST_TMP/sampler.json" &
sampler=$!
start_daemon --config "$CG_TEST_TMP/ntp.toml"
tracking_json() { "$CG" tracking --json --runtime-dir "$RUNTIME"; }

# Before the midnight: synchronised, the leap second announced and taken.
for _ in $(seq 1 300); do
    tracking_json | jq -e '.leap_status == "insert second"' >/dev/null 2>&1 && break
    sleep 0.1
done
tracking_json | jq -c '{synchronized, leap_status, leap_seconds, offset_s}'
tracking_json | jq -e --argjson m "$MIDNIGHT" '.synchronized and .leap_status == "insert second"
    and .leap_seconds == [{delta_s: 1, at_unix_s: $m, passed: false, sources: [0]}]' >/dev/null \
    || fail "the leap second was not taken before the midnight: $(tracking_json | jq -c .)"
# The kernel is not asked to apply it: STA_INS would make it step the clock back.
kernel_status() { "$CALL" timex | jq .status; }
(( ($(kernel_status) & STA_INS) == 0 )) || fail "STA_INS is set: $("$CALL" timex)"

# After it: until the clock is within 1 ms of the reference (UTC, with the second inserted).
until "$REF" offset --params "$PARAMS" | jq -e --argjson m "$MIDNIGHT" '.ref_ns >= $m * 1000000000' >/dev/null; do
    sleep 0.2
done
echo "reference past the midnight: $("$REF" offset --params "$PARAMS")"
watch_within 90 "$CG_TEST_TMP/watch.json" --params "$PARAMS" --until-abs-ns 1000000 --hold-s 5
touch "$STOP"
wait "$sampler"
cat "$CG_TEST_TMP/watch.json" "$CG_TEST_TMP/sampler.json"
tracking_json | jq -c '{leap_status, leap_seconds, offset_s, last_convergence}'
"$CG" sources --runtime-dir "$RUNTIME"
grep -E "leap|NTP: the clock" "$CG_TEST_TMP/daemon.log" | sed 's/\x1b\[[0-9;]*m//g' | head -20

jq -e '.converged == true and .converged_after_s < 30' "$CG_TEST_TMP/watch.json" >/dev/null \
    || fail "the clock did not follow the leap second within 30 s: $(cat "$CG_TEST_TMP/watch.json")"
assert_no_step "$CG_TEST_TMP/sampler.json"
(( ($(kernel_status) & STA_INS) == 0 )) || fail "STA_INS is set: $("$CALL" timex)"
tracking_json | jq -e '.leap_status == "normal" and .leap_seconds[0].passed == true' >/dev/null \
    || fail "the leap second is not marked passed: $(tracking_json | jq -c '{leap_status, leap_seconds}')"
"$CG" sources --json --runtime-dir "$RUNTIME" | jq -e '.sources[0].counters.resets == 0' >/dev/null \
    || fail "the source's filter was reset by the leap: $("$CG" sources --json --runtime-dir "$RUNTIME" | jq -c '.sources[0].counters')"
echo "METRIC ntp-leap-second followed_after_s=$(jq .converged_after_s "$CG_TEST_TMP/watch.json") $(jq -r '"max_step_ns=\(.max_step_ns) backward_moves=\(.backward_moves)"' "$CG_TEST_TMP/sampler.json")"
