#!/usr/bin/env bash
# Bench, in the test VM (`cargo xtask bench` runs it): the clock error bound a database
# would read, from clockguard and from ClockBound's own daemon (clock-bound-d 2.0.3, fed by
# Debian's chronyd 4.3), one after the other in one boot, on the same reference server
# (cg-ntpref on loopback, whose true time the reader knows) and through the same events:
#   1. steady state: SETTLE_S to synchronise and settle, then HOLD_S held;
#   2. a time agent steps the clock +2 s (cg-clockcall settime-by): clockguard's guard
#      refuses it and slews it in (the agent is a slew_instead one); under chronyd the step
#      happens and chronyd takes it back;
#   3. the whole VM is stopped for 5 s (SIGSTOP to QEMU from the host);
#   4. AFTER_S more.
# A reader built on ClockBound's client crate (cg-ntpref bound) reads each daemon's segment
# every millisecond through all of it and holds every [earliest, latest] against the
# reference's time. Both as their documentation configures them: polls at 16 s
# (minpoll = maxpoll = 4) for both; chronyd with `maxclockerror 50` and clockbound with
# `--max-drift-rate 50` (ClockBound's README); clockbound without vmclock (`-d`: this
# kernel has none); clockguard in guard mode with exclusive_discipline.
# Prints one "RESULT {json}" line per daemon.
set -euo pipefail
export CG_TEST_TMP=/run/cg-bench-bound-sbs
mkdir -p "$CG_TEST_TMP"
mountpoint -q "$CG_TEST_TMP" || mount -t tmpfs none "$CG_TEST_TMP"
source "$CG_REPO/tests/vm/lib.sh"
need_vm
SETTLE_S=${CG_BENCH_BOUND_SETTLE_S:-60}
HOLD_S=${CG_BENCH_BOUND_HOLD_S:-120}
AFTER_S=${CG_BENCH_BOUND_AFTER_S:-60}
CHRONYD="$CG_REPO/target/tools/chrony/usr/sbin/chronyd"
CLOCKBOUND="$CG_REPO/target/tools/clockbound/bin/clockbound"
[[ -x "$CHRONYD" ]] || fail "no $CHRONYD: run cargo xtask setup"
[[ -x "$CLOCKBOUND" ]] || fail "no $CLOCKBOUND: cargo xtask bench builds it"
echo "EXPECT daemon clockguard clockbound"
# The agent whose step clockguard slews in: a copy of cg-clockcall (its own inode).
AGENT="$CG_TEST_TMP/cg-agent"
cp "$CALL" "$AGENT"

PARAMS="$CG_TEST_TMP/ref.json"
start_reference "$PARAMS" "$CG_TEST_TMP/ref.log" --listen 127.0.0.1:12330 --offset-s 0
ref_pid=$REF_PID
daemons=()
reader=""
trap 'kill $reader "${daemons[@]}" "$ref_pid" 2>/dev/null || true; stop_daemon' EXIT

# run_events NAME SEGMENT: reads SEGMENT through the events; the reader's report in
# $CG_TEST_TMP/NAME.json.
run_events() {
    local name=$1 segment=$2
    rm -f "$CG_TEST_TMP/$name.stop"
    "$CG_BIN_DIR/cg-ntpref" bound --params "$PARAMS" --segment "$segment" \
        --stopfile "$CG_TEST_TMP/$name.stop" --trace "$CG_TEST_TMP/$name.trace" \
        >"$CG_TEST_TMP/$name.json" 2>"$CG_TEST_TMP/$name.err" &
    reader=$!
    sleep "$SETTLE_S"
    sleep "$HOLD_S"
    echo "$name: offset before the step: $("$CG_BIN_DIR/cg-ntpref" offset --params "$PARAMS")"
    "$AGENT" settime-by 2000000000 || true
    sleep 40
    echo "$name: paused the VM for $(vm_pause 5) s"
    sleep "$AFTER_S"
    touch "$CG_TEST_TMP/$name.stop"
    wait "$reader" || fail "$name: the reader failed: $(cat "$CG_TEST_TMP/$name.err")"
    reader=""
    jq -c 'del(.changes)' "$CG_TEST_TMP/$name.json"
    jq -c '.changes' "$CG_TEST_TMP/$name.json"
    # The width while held (the trace's synchronized readings in the steady-state window,
    # every 100th reading; its seconds count from the reader's start, as the sleeps do).
    local held
    held=$(awk -v from="$SETTLE_S" -v to="$((SETTLE_S + HOLD_S))" \
        '$1 >= from && $1 < to && $2 == "synchronized" { print $3 }' "$CG_TEST_TMP/$name.trace" | sort -n \
        | awk '{ v[NR] = $1 } END { printf "{\"held_readings\": %d, \"held_bound_p50_ns\": %s, \"held_bound_p99_ns\": %s}", NR, NR ? v[int((NR + 1) / 2)] : "null", NR ? v[int((NR * 99 + 99) / 100)] : "null" }')
    echo "RESULT $(jq -c --arg name "$name" --argjson held "$held" '$held + {daemon: $name, samples, errors,
        outside_trusted: ([.by_status | to_entries[] | select(.key != "unknown") | .value.outside] | add),
        worst_miss_ns: ([.by_status | to_entries[] | select(.key != "unknown") | .value.worst_miss_ns // 0] | max),
        outside_from_s: ([.by_status | to_entries[] | select(.key != "unknown") | .value.outside_from_s // empty] | min),
        outside_to_s: ([.by_status | to_entries[] | select(.key != "unknown") | .value.outside_to_s // empty] | max),
        synchronized_samples: .by_status.synchronized.samples,
        synchronized_bound_p50_ns: .by_status.synchronized.bound_p50_ns,
        synchronized_bound_p99_ns: .by_status.synchronized.bound_p99_ns,
        by_status: (.by_status | map_values({samples, outside})),
        status_changes, changes: .changes[:16]}' "$CG_TEST_TMP/$name.json")"
}

# clockguard.
SEGMENT="$CG_TEST_TMP/clockbound/shm0"
cat >"$CG_TEST_TMP/cg.toml" <<EOF2
mode = "guard"
[guard]
defer_to_time_services = false
max_slew_ppm = 100500
slew_instead = ["$AGENT"]
exclusive_discipline = true
[ntp]
servers = ["127.0.0.1:12330"]
maxpoll = 4
[bound]
path = "$SEGMENT"
EOF2
"$CALL" freq 0 >/dev/null
start_daemon --config "$CG_TEST_TMP/cg.toml"
run_events clockguard "$SEGMENT"
"$CG" now --runtime-dir "$RUNTIME" || true
stop_daemon

# chronyd disciplining the clock, and clockbound reading it. Both have fixed paths:
# chronyd's command socket /var/run/chrony/chronyd.sock (clockbound's client library has it
# built in), clockbound's segment /var/run/clockbound/shm0.
"$CALL" freq 0 >/dev/null
mkdir -p /run/chrony && chmod 750 /run/chrony
rm -f /run/clockbound/shm0
cat >"$CG_TEST_TMP/chrony.conf" <<EOF2
server 127.0.0.1 port 12330 iburst minpoll 4 maxpoll 4
maxclockerror 50
makestep 1 3
cmdport 0
pidfile $CG_TEST_TMP/chronyd.pid
EOF2
"$CHRONYD" -d -u root -f "$CG_TEST_TMP/chrony.conf" >"$CG_TEST_TMP/chronyd.log" 2>&1 &
daemons+=($!)
for _ in $(seq 1 100); do [[ -S /run/chrony/chronyd.sock ]] && break; sleep 0.1; done
[[ -S /run/chrony/chronyd.sock ]] || fail "chronyd made no command socket: $(tail -5 "$CG_TEST_TMP/chronyd.log")"
"$CLOCKBOUND" -d --max-drift-rate 50 >"$CG_TEST_TMP/clockbound.log" 2>&1 &
daemons+=($!)
run_events clockbound /run/clockbound/shm0
tail -5 "$CG_TEST_TMP/chronyd.log"
# Its warnings and errors (its log has no level option), and whether it outlived the run.
grep -E "WARN|ERROR|panicked" "$CG_TEST_TMP/clockbound.log" | sed 's/\x1b\[[0-9;]*m//g' | tail -8 || true
kill -0 "${daemons[1]}" 2>/dev/null || { tail -30 "$CG_TEST_TMP/clockbound.log"; fail "clockbound exited during the run"; }
kill "${daemons[@]}" 2>/dev/null || true
wait "${daemons[@]}" 2>/dev/null || true
daemons=()
