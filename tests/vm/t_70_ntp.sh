# NTP discipline, slew only. The reference server (cg-ntpref: its clock runs from
# CLOCK_MONOTONIC_RAW) is 11 s ahead of the VM's clock and also sends hostile datagrams
# (truncated, spoofed origin, duplicates). clockguard in guard mode brings the offset under
# 1 ms without a step or a backward move (1 ms sampler), reports the convergence time, holds
# it, and counts every hostile datagram. Its own NTP server answers with the disciplined
# time; malformed requests get no answer, a burst gets rate-limited.
# Throughout, a reader built on ClockBound's own client crate reads the error bound
# clockguard publishes every millisecond and holds it against the reference's time: 0
# readings outside, from the first estimate through the 11 s slew and the hold, and through
# a refused +2 s step that clockguard slews in (the bound widens by it at once).
#
# About 215 s, most of it the 11 s slewed in and held: too close to run-suite's default 300 s.
# cg-timeout: 420
source "$(dirname "$0")/lib.sh"
need_vm

REF="$CG_BIN_DIR/cg-ntpref"
PARAMS="$CG_TEST_TMP/ref.json"
start_reference "$PARAMS" "$CG_TEST_TMP/ref.log" --listen 127.0.0.1:12300 --offset-s 11 --hostile 5
ref_pid=$REF_PID
trap 'kill "$ref_pid" 2>/dev/null; stop_daemon' EXIT
echo "reference: $(cat "$PARAMS")"
echo "offset before: $("$REF" offset --params "$PARAMS")"

# A time agent whose refused step clockguard slews in: a copy of cg-clockcall (its own
# inode, so the original stays plainly refused).
AGENT="$CG_TEST_TMP/cg-agent"
cp "$CALL" "$AGENT"
SEGMENT="$CG_TEST_TMP/clockbound/shm0"
cat >"$CG_TEST_TMP/ntp.toml" <<EOF2
mode = "guard"
log_level = "info,clockguard::ntp=debug"
[guard]
defer_to_time_services = false
# The kernel's fastest: 10 % through the tick + 500 ppm through the frequency.
max_slew_ppm = 100500
slew_instead = ["$AGENT"]
# No one else may slew: the bound grows at the drift floor + 3 x skew, not at 500 ppm.
exclusive_discipline = true
[ntp]
servers = ["127.0.0.1:12300"]
serve = "127.0.0.1:12301"
[bound]
path = "$SEGMENT"
EOF2
# The reader waits (30 s at most) for the daemon to create the segment.
echo "bound reader started at $(date -u +%T.%N) (its seconds count from then)"
"$REF" bound --params "$PARAMS" --segment "$SEGMENT" --stopfile "$CG_TEST_TMP/bound.stop" \
    --trace "$CG_TEST_TMP/bound.trace" >"$CG_TEST_TMP/bound.json" 2>"$CG_TEST_TMP/bound.err" &
reader=$!
trap 'kill "$ref_pid" "$reader" 2>/dev/null; stop_daemon' EXIT
STOP="$CG_TEST_TMP/sampler.stop"
"$CALL" sample "$STOP" >"$CG_TEST_TMP/sampler.json" &
sampler=$!
start_daemon --config "$CG_TEST_TMP/ntp.toml"
status_json | jq -e '.mode == "guard" and .enforcement.active == true' >/dev/null \
    || fail "guard not active: $(status_json | jq -c .enforcement)"

# Until |offset| < 1 ms has held for 20 s (the watch gives up after 15 min; the suite's
# timeout is shorter).
"$REF" watch --params "$PARAMS" --until-abs-ns 1000000 --hold-s 20 --stopfile "$STOP.watch" \
    >"$CG_TEST_TMP/watch.json"
touch "$STOP"
wait "$sampler"
cat "$CG_TEST_TMP/watch.json"
cat "$CG_TEST_TMP/sampler.json"
"$CG" tracking --runtime-dir "$RUNTIME"
"$CG" sources --runtime-dir "$RUNTIME"
grep -E "NTP|slew" "$CG_TEST_TMP/daemon.log" | sed 's/\x1b\[[0-9;]*m//g' | head -80

jq -e '.converged == true' "$CG_TEST_TMP/watch.json" >/dev/null \
    || fail "did not converge under 1 ms: $(cat "$CG_TEST_TMP/watch.json")"
assert_no_step "$CG_TEST_TMP/sampler.json"
echo "METRIC ntp-converge-11s converged_after_s=$(jq .converged_after_s "$CG_TEST_TMP/watch.json") held_max_abs_ns=$(jq .max_abs_offset_after_converged_ns "$CG_TEST_TMP/watch.json")"
echo "METRIC ntp-sampler $(jq -r '"samples=\(.samples) max_step_ns=\(.max_step_ns) backward_moves=\(.backward_moves)"' "$CG_TEST_TMP/sampler.json")"

tracking=$("$CG" tracking --json --runtime-dir "$RUNTIME")
echo "$tracking" | jq -e '.synchronized == true and .disciplining == true and (.offset_s | fabs) < 0.001 and .stratum == 2 and .leap_status == "normal"' >/dev/null \
    || fail "tracking: $tracking"
# clockguard reports its own convergence time: from about -11 s, no faster than a perfect
# slew at the kernel's fastest (11 s / 10.05 % = 109.5 s), and ending no later than the
# reference saw the clock come under 1 ms for good (the watch reports the start of the
# final run under 1 ms, which can be later than the first time under 1 ms that clockguard
# reports). The two ends are compared as CLOCK_REALTIME instants, not as durations: the
# watch starts after the daemon is up, seconds into the slew under emulation.
# The one from -11 s: a later excursion of a ms or two (TCG jitter) is corrected and
# reported after it. clockguard judges "within 1 ms" on its estimate, which under the
# emulator can itself be a millisecond off, so when the slew ends a few ms short its report
# can wait for the next measurement: up to a poll interval (2^poll s) after the reference
# saw the clock arrive, plus 2 s.
poll_s=$(( 1 << $("$CG" sources --json --runtime-dir "$RUNTIME" | jq '.sources[0].poll') ))
from11=$(echo "$tracking" | jq -c '[.convergences[] | select((.from_offset_s + 11 | fabs) < 0.01)] | last')
echo "$from11" | jq -e --argjson seen_at_ns "$(jq .converged_at_realtime_ns "$CG_TEST_TMP/watch.json")" --argjson poll_s "$poll_s" \
    '.took_s > 109 and (.ended | sub("\\.[0-9]+Z$"; "Z") | fromdateiso8601) <= ($seen_at_ns / 1e9 + $poll_s + 2)' >/dev/null \
    || fail "convergence report: $(echo "$tracking" | jq -c .convergences), the reference saw the final run under 1 ms begin at $(jq .converged_at_realtime_ns "$CG_TEST_TMP/watch.json") ns (CLOCK_REALTIME), poll $poll_s s"
echo "METRIC ntp-reported-convergence took_s=$(echo "$from11" | jq .took_s)"
sources=$("$CG" sources --json --runtime-dir "$RUNTIME")
echo "$sources" | jq -e '.sources[0].state == "selected" and .sources[0].counters.malformed > 0 and .sources[0].counters.bad_origin > 0 and .sources[0].counters.duplicate > 0' >/dev/null \
    || fail "hostile datagrams not counted: $sources"
echo "METRIC ntp-hostile $(echo "$sources" | jq -r '.sources[0].counters | "malformed=\(.malformed) bad_origin=\(.bad_origin) duplicate=\(.duplicate) accepted=\(.accepted)"')"
# No step was journaled: clockguard only slewed.
audit_json | jq -e -s '[.[] | select(.kind == "step" and .verdict != "denied")] | length == 0' >/dev/null \
    || fail "a step was journaled: $(audit_json | jq -c 'select(.kind == "step")' | head -3)"

# clockguard's server: its time against the reference = query offset + (system - ref).
# The query's offset is only known to within half its round trip (the NTP error bound), and
# under TCG a round trip on loopback can take milliseconds: the best of 4 is kept, and the
# tolerance is the 1 ms the discipline holds plus that half.
query=$("$REF" query 127.0.0.1:12301 --count 4) \
    || fail "no valid answer from clockguard's server: $query; $("$CG" tracking --json --runtime-dir "$RUNTIME" | jq -c '{synchronized, stratum, leap_status, server}')"
system_minus_ref=$("$REF" offset --params "$PARAMS" | jq .offset_ns)
echo "query: $query"
served_minus_ref=$(( $(echo "$query" | jq .offset_ns) + system_minus_ref ))
half_round_trip=$(( $(echo "$query" | jq .delay_ns) / 2 ))
echo "METRIC ntp-served served_minus_ref_ns=$served_minus_ref half_round_trip_ns=$half_round_trip"
echo "$query" | jq -e '.stratum == 2 and .refid == "127.0.0.1" and .reply_len == 48' >/dev/null \
    || fail "served: $query"
assert_close "$served_minus_ref" 0 $(( 1000000 + half_round_trip ))
# Malformed requests get no answer; a burst beyond 8 is rate-limited (KoD or silence).
for bad in 1b 1b000000 "$(printf '23%.0s' $(seq 1 47))"; do
    "$REF" query 127.0.0.1:12301 --raw-bytes "$bad" --timeout-ms 300 | jq -e '.reply == false' >/dev/null \
        || fail "malformed request $bad was answered"
done
"$REF" query 127.0.0.1:12301 --count 12 --timeout-ms 300 >"$CG_TEST_TMP/burst.json" || true
counters=$("$CG" tracking --json --runtime-dir "$RUNTIME" | jq -c .server.counters)
echo "server counters: $counters"
echo "$counters" | jq -e '.malformed >= 3 and (.kiss_rate + .rate_limited) >= 1' >/dev/null \
    || fail "server counters: $counters"
kill -0 "$DAEMON_PID" || fail "the daemon died"

# The bound now: synchronized, and the discipline's part of it narrow (the clock holds the
# time under 1 ms). The published bound may be wider by a short stall's length (the
# emulator has 100 ms ones), which widens it without disrupting it.
"$CG" now --runtime-dir "$RUNTIME"
now=$("$CG" now --json --runtime-dir "$RUNTIME")
echo "$now" | jq -e '.status == "synchronized" and .why.drift_floor_ppb == 1000
    and ([.why.measured | .offset_ns, .estimate_error_ns, .half_root_delay_ns, .root_dispersion_ns, .slewing_in_ns] | add) < 20000000
    and .bound_ns < 1000000000' >/dev/null \
    || fail "bound after convergence: $now"
# A refused +2 s step slewed in: the bound takes the 2 s at once, before the clock moves
# (the journal's record says what was published as the slew began).
"$AGENT" settime-by 2000000000 || true
wait_records 1 '.verdict == "slewed"'
slewed=$(audit_json | jq -c 'select(.verdict == "slewed") | .slew' | head -1)
echo "slewed: $slewed"
echo "$slewed" | jq -e '.correction_ns > 1900000000 and .bound_ns > .correction_ns' >/dev/null \
    || fail "the bound did not take the refused step being slewed in: $slewed"
# Later, until the discipline measures again the whole correction stays in the bound; once
# it has (a poll can come at any moment), its update replaced the correction and the bound
# keeps only what the old one may still move the clock before the slew engine's next tick.
now=$("$CG" now --json --runtime-dir "$RUNTIME")
echo "slewing in: $(echo "$now" | jq -c '{status, bound_ns, slewing_in_ns: .why.slewing_in_ns, measured: .why.measured}')"
echo "$now" | jq -e '.status == "synchronized"
    and ((.why.slewing_in_ns > 1900000000 and .bound_ns > 1900000000) or .why.measured.slewing_in_ns > 0)' >/dev/null \
    || fail "the bound lost the refused step being slewed in: $now"
# Read on while the agent's step is slewed in and clockguard's discipline takes it back.
sleep 25
touch "$CG_TEST_TMP/bound.stop"
wait "$reader" || fail "the ClockBound reader failed: $(cat "$CG_TEST_TMP/bound.err")"
jq -c 'del(.changes)' "$CG_TEST_TMP/bound.json"
jq -c '.changes' "$CG_TEST_TMP/bound.json"
"$CG" now --runtime-dir "$RUNTIME"
# Every reading a client may trust (all but "unknown", before the first estimate) holds
# the reference's time.
jq -e '[.by_status | to_entries[] | select(.key != "unknown") | .value.outside] | add == 0' \
    "$CG_TEST_TMP/bound.json" >/dev/null \
    || { awk 'NR % 10 == 1' "$CG_TEST_TMP/bound.trace" | head -400
         grep -E "bound|NTP: the clock|slew" "$CG_TEST_TMP/daemon.log" | sed 's/\x1b\[[0-9;]*m//g' | tail -60
         fail "true time outside the bound: $(jq -c '{outside, first_outside, by_status}' "$CG_TEST_TMP/bound.json")"; }
jq -e '.by_status.synchronized.samples > 100000 and .errors == {}' "$CG_TEST_TMP/bound.json" >/dev/null \
    || fail "too few synchronized readings, or read errors: $(jq -c 'del(.changes)' "$CG_TEST_TMP/bound.json")"
# The width once converged (the trace's readings of a bound under 20 ms: after the 11 s
# slew, before the agent's step), every 100th reading.
held=$(awk '$2 == "synchronized" && $3 < 20000000 { print $3 }' "$CG_TEST_TMP/bound.trace" | sort -n \
    | awk '{ v[NR] = $1 } END { if (NR) printf "held_readings=%d held_bound_p50_ns=%d held_bound_max_ns=%d", NR, v[int((NR + 1) / 2)], v[NR] }')
[[ -n "$held" ]] || fail "no converged readings in the trace"
echo "METRIC bound-ntp-vm-held $held"
echo "METRIC bound-ntp-vm $(jq -r '"samples=\(.samples) outside_trusted=\([.by_status | to_entries[] | select(.key != "unknown") | .value.outside] | add) synchronized=\(.by_status.synchronized.samples) bound_p50_ns=\(.by_status.synchronized.bound_p50_ns) bound_p99_ns=\(.by_status.synchronized.bound_p99_ns) status_changes=\(.status_changes)"' "$CG_TEST_TMP/bound.json")"
