# The clock error bound through a VM pause. clockguard disciplines the clock against a
# reference on loopback (guard mode, exclusive discipline) and publishes the bound; a
# reader built on ClockBound's own client crate reads it every millisecond and holds it
# against the reference's time. The whole VM is stopped for 5 s from outside (SIGSTOP to
# QEMU): the first timer that fires late makes the segment Disrupted (the daemon cannot
# tell yet whether the guest's clock stood still), the NTP sources are polled in a burst,
# and the bound is synchronized again within seconds. True time never leaves a bound a
# client may trust (synchronized, free running or disrupted).
source "$(dirname "$0")/lib.sh"
need_vm

REF="$CG_BIN_DIR/cg-ntpref"
PARAMS="$CG_TEST_TMP/ref.json"
"$REF" serve --listen 127.0.0.1:12310 --params "$PARAMS" --offset-s 0 \
    >"$CG_TEST_TMP/ref.log" 2>&1 &
ref_pid=$!
reader=""
trap 'kill "$ref_pid" $reader 2>/dev/null; stop_daemon' EXIT
for _ in $(seq 1 100); do [[ -s "$PARAMS" ]] && break; sleep 0.1; done
[[ -s "$PARAMS" ]] || fail "cg-ntpref did not start: $(cat "$CG_TEST_TMP/ref.log")"

SEGMENT="$CG_TEST_TMP/clockbound/shm0"
cat >"$CG_TEST_TMP/bound.toml" <<EOF2
mode = "guard"
[guard]
defer_to_time_services = false
exclusive_discipline = true
[ntp]
servers = ["127.0.0.1:12310"]
[bound]
path = "$SEGMENT"
EOF2
"$REF" bound --params "$PARAMS" --segment "$SEGMENT" --stopfile "$CG_TEST_TMP/bound.stop" \
    --trace "$CG_TEST_TMP/bound.trace" >"$CG_TEST_TMP/bound.json" 2>"$CG_TEST_TMP/bound.err" &
reader=$!
start_daemon --config "$CG_TEST_TMP/bound.toml"

# now_status: the status a ClockBound reader sees now.
now_status() { "$CG" now --json --runtime-dir "$RUNTIME" | jq -r .status; }
for _ in $(seq 1 600); do [[ "$(now_status)" == synchronized ]] && break; sleep 0.1; done
[[ "$(now_status)" == synchronized ]] || fail "not synchronized in 60 s: $("$CG" now --json --runtime-dir "$RUNTIME")"
"$CG" now --runtime-dir "$RUNTIME"
sleep 5

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
for _ in $(seq 1 300); do [[ "$(now_status)" == synchronized ]] && break; sleep 0.1; done
"$CG" now --runtime-dir "$RUNTIME"
[[ "$(now_status)" == synchronized ]] || fail "not synchronized again 30 s after the pause"
grep -q "NTP: the clock was disrupted: polling every source now" "$CG_TEST_TMP/daemon.log" \
    || fail "no burst after the pause"
sleep 3
touch "$CG_TEST_TMP/bound.stop"
wait "$reader" || fail "the ClockBound reader failed: $(cat "$CG_TEST_TMP/bound.err")"
reader=""
jq -c 'del(.changes)' "$CG_TEST_TMP/bound.json"
jq -c '.changes' "$CG_TEST_TMP/bound.json"
jq -e '[.by_status | to_entries[] | select(.key != "unknown") | .value.outside] | add == 0' \
    "$CG_TEST_TMP/bound.json" >/dev/null \
    || { awk '$2 != "unknown"' "$CG_TEST_TMP/bound.trace" | awk 'NR % 5 == 1' | tail -120
         fail "true time outside the bound: $(jq -c '{first_outside, by_status}' "$CG_TEST_TMP/bound.json")"; }
jq -e '.errors == {} and .by_status.disrupted.samples > 0' "$CG_TEST_TMP/bound.json" >/dev/null \
    || fail "read errors, or the reader never saw the segment disrupted: $(jq -c 'del(.changes)' "$CG_TEST_TMP/bound.json")"
# The reader saw: synchronized, then disrupted (maybe free running in between: its own
# 5 s pause aged the bound), then synchronized again; how long the bound stayed disrupted.
disrupted_for=$(jq '[.changes[] | select(.[1] == "disrupted")][0][0] as $from
    | [.changes[] | select(.[1] == "synchronized" and .[0] > $from)][0][0] - $from' "$CG_TEST_TMP/bound.json")
[[ "$disrupted_for" != null ]] || fail "not synchronized again after disrupted: $(jq -c .changes "$CG_TEST_TMP/bound.json")"
# How long the reader, once resumed, still read the bound from before the pause (aged
# past 5 s: free running) before the segment said disrupted.
stale_for=$(jq '.changes as $c | ([range(0; $c | length) | select($c[.][1] == "disrupted")][0]) as $i
    | if $i > 0 and $c[$i - 1][1] == "free_running" then $c[$i][0] - $c[$i - 1][0] else 0 end' "$CG_TEST_TMP/bound.json")
echo "METRIC bound-vm-pause paused_s=$paused_s stale_after_resume_s=$stale_for disrupted_for_s=$disrupted_for $(jq -r '"samples=\(.samples) disrupted=\(.by_status.disrupted.samples) outside_trusted=\([.by_status | to_entries[] | select(.key != "unknown") | .value.outside] | add) disrupted_bound_max_ns=\(.by_status.disrupted.bound_max_ns)"' "$CG_TEST_TMP/bound.json")"
kill -0 "$DAEMON_PID" || fail "the daemon died"
