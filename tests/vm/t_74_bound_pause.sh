# The clock error bound through a VM pause. clockguard disciplines the clock against a
# reference on loopback (guard mode, exclusive discipline) and publishes the bound; a
# reader built on ClockBound's own client crate reads it every millisecond and holds it
# against the reference's time. The whole VM is stopped for 5 s from outside (SIGSTOP to
# QEMU): the first timer that fires late makes the segment Disrupted (the daemon cannot
# tell yet whether the guest's clock stood still), the NTP sources are polled in a burst,
# and the bound is synchronized again within seconds. Then the reference's own time steps
# +2 s: the bound misses it until clockguard's first sample after the step (within a 4 s
# poll: nothing can know sooner) and holds it from then on, first as the samples the
# filter holds back as outliers, then as the offset slewed in. Then the reference goes
# away: the bound grows at the drift from the last measurement, and once the source is
# unreachable (8 unanswered polls, polls held at 4 s: the reference is ours, on loopback)
# the segment says free running and goes on growing. True time never leaves a bound a client may trust (synchronized, free running
# or disrupted).
#
# About 90 s; on 7.2 the pause makes the kernel give up the TSC (ClocksourceSwitch) and
# every clock read is slower after it.
# cg-timeout: 300
source "$(dirname "$0")/lib.sh"
need_vm

REF="$CG_BIN_DIR/cg-ntpref"
PARAMS="$CG_TEST_TMP/ref.json"
start_reference "$PARAMS" "$CG_TEST_TMP/ref.log" --listen 127.0.0.1:12310 --offset-s 0
ref_pid=$REF_PID
# Where the time goes (seconds since the VM booted), should the test run long.
phase() { echo "[phase $(cut -d' ' -f1 /proc/uptime) s] $*"; }
reader=""
trap 'kill $ref_pid $reader 2>/dev/null || true; stop_daemon' EXIT

SEGMENT="$CG_TEST_TMP/clockbound/shm0"
cat >"$CG_TEST_TMP/bound.toml" <<EOF2
mode = "guard"
[guard]
defer_to_time_services = false
exclusive_discipline = true
[ntp]
servers = ["127.0.0.1:12310"]
minpoll = 2
maxpoll = 2
[bound]
path = "$SEGMENT"
EOF2
"$REF" bound --params "$PARAMS" --segment "$SEGMENT" --stopfile "$CG_TEST_TMP/bound.stop" \
    --trace "$CG_TEST_TMP/bound.trace" >"$CG_TEST_TMP/bound.json" 2>"$CG_TEST_TMP/bound.err" &
reader=$!
start_daemon --config "$CG_TEST_TMP/bound.toml"

phase "started; waiting for synchronized"
synced=$(wait_now 600 '.status == "synchronized"') || fail "not synchronized in 60 s: $synced"
"$CG" now --runtime-dir "$RUNTIME"
sleep 5

phase "pausing the VM"
paused_s=$(vm_pause 5)
echo "the host paused the VM for $paused_s s"
for _ in $(seq 1 100); do
    grep -q "bound: disrupted" "$CG_TEST_TMP/daemon.log" && break
    sleep 0.1
done
grep "bound: disrupted" "$CG_TEST_TMP/daemon.log" | sed 's/\x1b\[[0-9;]*m//g' | head -5
grep -q "bound: disrupted (Pause" "$CG_TEST_TMP/daemon.log" \
    || fail "the pause did not disrupt the bound: $(grep -E "bound|stall" "$CG_TEST_TMP/daemon.log" | tail -5)"
# Measured again: the sources were polled in a burst.
phase "resumed; waiting for synchronized again"
synced=$(wait_now 300 '.status == "synchronized"') || fail "not synchronized again 30 s after the pause: $synced"
"$CG" now --runtime-dir "$RUNTIME"
grep -q "NTP: the clock was disrupted: polling every source now" "$CG_TEST_TMP/daemon.log" \
    || fail "no burst after the pause"
sleep 3

# The reference steps +2 s (in 1 s: the server and the reader pick the step up first).
phase "stepping the reference"
step=$("$REF" step --params "$PARAMS" --by-ns 2000000000)
echo "reference step: $step"
taken=$(wait_now 300 '.bound_ns > 1900000000') \
    || fail "the bound did not take the reference's step within 30 s: $taken"
echo "bound after the step: $(echo "$taken" | jq -c '{status, bound_ns, measured: .why.measured}')"
# The filter resets onto the new line after three samples; the 2 s is then slewed in.
phase "the bound took the step"
followed=$(wait_now 900 '.why.measured.offset_ns | fabs > 1000000000') \
    || fail "the discipline did not follow the reference's step within 90 s: $followed; $("$CG" sources --json --runtime-dir "$RUNTIME" | jq -c .sources[0])"
echo "followed: $(echo "$followed" | jq -c '{status, bound_ns, measured: .why.measured}')"

# The reference goes away (its time, which the reader holds the bound against, runs on).
phase "the discipline followed; the reference goes away"
kill "$ref_pid"
wait "$ref_pid" || true
ref_pid=""
gone_at=$(cut -d' ' -f1 /proc/uptime)
lost_from=$("$CG" now --json --runtime-dir "$RUNTIME")
# Sources lost: a synchronized bound goes on as free running; one a disruption came to
# since the last measurement stays disrupted (bound.rs: nothing measured it again). 7.2
# switches clocksource on its own in this VM, so either may be the answer; the sources
# must be lost either way (8 polls: 32 s). At most ~120 s of tries, so that a failure is
# told before run-suite's timeout.
lost=$(wait_now 600 '.why.sources_lost and (.status == "free_running" or .status == "disrupted")') || true
lost_after_s=$(awk -v from="$gone_at" '{ printf "%.1f", $1 - from }' /proc/uptime)
"$CG" now --runtime-dir "$RUNTIME"
echo "$lost" | jq -e '.why.sources_lost and .status == .published_status
    and (.status == "free_running" or (.status == "disrupted" and .why.disrupted))' >/dev/null \
    || fail "the sources not lost, or not free running, $lost_after_s s after the reference went away: $(echo "$lost" | jq -c '{status, published_status, why}'); sources: $("$CG" sources --json --runtime-dir "$RUNTIME" | jq -c '.sources[0] | {state, reach, poll}'); daemon: $(grep -E "bound:|NTP:|clocksource" "$CG_TEST_TMP/daemon.log" | sed 's/\x1b\[[0-9;]*m//g' | tail -n 12)"
lost_status=$(echo "$lost" | jq -r .status)
[[ $lost_status == free_running ]] || echo "sources lost while disrupted: $(echo "$lost" | jq -c .why.last_disruption)"
sleep 2
still=$("$CG" now --json --runtime-dir "$RUNTIME")
# Growing all the while, at the drift published with the last measurement: 3 x the
# measured skew + the 1 ppm floor (the guard keeps every other process from slewing).
jq -n -e --argjson from "$lost_from" --argjson lost "$lost" --argjson still "$still" \
    '$lost.bound_ns > $from.bound_ns and $still.bound_ns > $lost.bound_ns
     and $still.max_drift_ppb >= 1000' >/dev/null \
    || fail "the bound did not grow without sources: $(jq -n -c --argjson a "$lost_from" --argjson b "$lost" --argjson c "$still" '[$a, $b, $c] | map({status, bound_ns, max_drift_ppb})')"
phase "free running; stopping the reader"
touch "$CG_TEST_TMP/bound.stop"
wait "$reader" || fail "the ClockBound reader failed: $(cat "$CG_TEST_TMP/bound.err")"
reader=""
jq -c 'del(.changes)' "$CG_TEST_TMP/bound.json"
jq -c '.changes' "$CG_TEST_TMP/bound.json"
# Outside only from the reference's step until the first poll after it could have seen it
# (4 s, and 2 s for the emulator): the seconds of the reader's readings count from its
# start on CLOCK_MONOTONIC_RAW, as the step's instant is given.
step_at_s=$(jq -n --argjson step "$step" --argjson started "$(jq .started_raw_ns "$CG_TEST_TMP/bound.json")" \
    '($step.at_raw_ns - $started) / 1e9')
jq -e --argjson step_at_s "$step_at_s" '[.by_status | to_entries[] | select(.key != "unknown") | .value]
    | ([.[].outside] | add) > 0
      and ([.[] | .outside_from_s // empty] | min) >= $step_at_s
      and ([.[] | .outside_to_s // empty] | max) <= $step_at_s + 6' \
    "$CG_TEST_TMP/bound.json" >/dev/null \
    || { awk '$2 != "unknown"' "$CG_TEST_TMP/bound.trace" | awk 'NR % 5 == 1' | tail -120
         fail "true time outside the bound other than between the reference's step (at $step_at_s s) and the first poll after it: $(jq -c '{first_outside, by_status}' "$CG_TEST_TMP/bound.json")"; }
jq -e --arg lost "$lost_status" '.errors == {} and .by_status.disrupted.samples > 0 and (.changes | last | .[1]) == $lost' "$CG_TEST_TMP/bound.json" >/dev/null \
    || fail "read errors, or the reader did not see the segment disrupted, then $lost_status at the end: $(jq -c 'del(.changes)' "$CG_TEST_TMP/bound.json")"
# The reader saw: synchronized, then disrupted (maybe free running in between: its own
# 5 s pause aged the bound), then synchronized again; how long the bound stayed disrupted.
disrupted_for=$(jq '[.changes[] | select(.[1] == "disrupted")][0][0] as $from
    | [.changes[] | select(.[1] == "synchronized" and .[0] > $from)][0][0] - $from' "$CG_TEST_TMP/bound.json")
[[ "$disrupted_for" != null ]] || fail "not synchronized again after disrupted: $(jq -c .changes "$CG_TEST_TMP/bound.json")"
# How long the reader, once resumed, still read the bound from before the pause (aged
# past 5 s: free running) before the segment said disrupted.
stale_for=$(jq '.changes as $c | ([range(0; $c | length) | select($c[.][1] == "disrupted")][0]) as $i
    | if $i > 0 and $c[$i - 1][1] == "free_running" then $c[$i][0] - $c[$i - 1][0] else 0 end' "$CG_TEST_TMP/bound.json")
echo "METRIC bound-vm-reference-step $(jq -r --argjson step_at_s "$step_at_s" '[.by_status | to_entries[] | select(.key != "unknown") | .value]
    | "outside=\([.[].outside] | add) outside_for_s=\((([.[] | .outside_to_s // empty] | max) - $step_at_s) * 1000 | round / 1000)"' "$CG_TEST_TMP/bound.json")"
# The sources lost: how long after the reference went away the segment said free running,
# and the widest bound read then.
echo "METRIC bound-vm-sources-lost status=$lost_status after_s=$lost_after_s free_running_bound_max_ns=$(jq .by_status.free_running.bound_max_ns "$CG_TEST_TMP/bound.json")"
echo "METRIC bound-vm-pause paused_s=$paused_s stale_after_resume_s=$stale_for disrupted_for_s=$disrupted_for $(jq -r '"samples=\(.samples) disrupted=\(.by_status.disrupted.samples) outside_trusted=\([.by_status | to_entries[] | select(.key != "unknown") | .value.outside] | add) disrupted_bound_max_ns=\(.by_status.disrupted.bound_max_ns)"' "$CG_TEST_TMP/bound.json")"
kill -0 "$DAEMON_PID" || fail "the daemon died"
