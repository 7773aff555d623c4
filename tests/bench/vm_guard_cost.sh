#!/usr/bin/env bash
# Bench, in the test VM (`cargo xtask bench` runs it): what the guard's hooks cost the calls
# they let through, side by side in one boot. Each loop is cg-clockcall's, N calls:
#   settime-loop          allowed clock_settime steps (+10 µs each): LSM settime, capable
#   freq-loop             allowed adjtimex(ADJ_FREQUENCY): fentry/fexit do_adjtimex, capable
#   capcheck-loop         setuid(own uid): a CAP_SETUID check, what every other program
#                         pays for the capable hook
#   gettime-loop          clock_gettime through the vDSO: no clockguard program can run
#   gettime-syscall-loop  the clock_gettime syscall itself, to show what the vDSO saves
# Rounds: off, on, off, on (medians of ns per call; `on` is guard mode, enforcing, the loop's
# executable on `allow`, statistics off). Then one more `on` with measure_hook_cost, where
# the kernel times each program: its runs per call and ns per run over each loop;
# `per_call` keeps those that ran once or more per call (the rest is background activity).
# Prints one "RESULT {json}" line per loop.
set -euo pipefail
export CG_TEST_TMP=/run/cg-bench-guard
mkdir -p "$CG_TEST_TMP"
mountpoint -q "$CG_TEST_TMP" || mount -t tmpfs none "$CG_TEST_TMP"
source "$CG_REPO/tests/vm/lib.sh"
need_vm
T="$CG_TEST_TMP"
CLOCK_CALLS=${CG_BENCH_GUARD_CALLS:-20000}
READ_CALLS=${CG_BENCH_READ_CALLS:-1000000}
LOOPS=(settime-loop freq-loop capcheck-loop gettime-loop gettime-syscall-loop)
# What must come back: `cargo xtask bench` fails the row when a loop has no RESULT.
echo "EXPECT loop ${LOOPS[*]}"
calls_of() { case $1 in gettime*) echo "$READ_CALLS" ;; *) echo "$CLOCK_CALLS" ;; esac; }

guard_config() {
    cat >"$T/guard.toml" <<EOF
mode = "guard"
[guard]
defer_to_time_services = false
allow = ["$CALL"]
[audit]
measure_hook_cost = $1
EOF
}

start_guard() {
    guard_config "$1"
    start_daemon --config "$T/guard.toml"
    status_json | jq -e '.enforcement.active == true' >/dev/null ||
        fail "guard not enforcing: $(status_json | jq -c '.enforcement | del(.policy)')"
}

# Waits (at most 60 s) until the daemon has used no CPU for 0.5 s: the records of the
# previous loop are journaled, so they do not compete with the next loop for the VM's CPUs.
daemon_idle() {
    [[ -n "$DAEMON_PID" ]] || return 0
    local before after
    for _ in $(seq 1 120); do
        before=$(awk '{print $14 + $15}' "/proc/$DAEMON_PID/stat")
        sleep 0.5
        after=$(awk '{print $14 + $15}' "/proc/$DAEMON_PID/stat")
        [[ "$before" == "$after" ]] && return 0
    done
}

# loop PHASE NAME: one run of the loop; every call must have passed (the guard allows it).
loop() {
    local phase=$1 name=$2 out
    daemon_idle
    out=$("$CALL" "$name" "$(calls_of "$name")")
    echo "$out" | jq -e '.ok == .calls' >/dev/null || fail "$name ($phase): not every call passed: $out"
    echo "$out" | jq -c --arg phase "$phase" --arg loop "$name" '{phase: $phase, loop: $loop, ns_per_call}' >>"$T/samples.jsonl"
}

rm -f "$T/samples.jsonl"
"$CALL" freq 0 >/dev/null
for _ in 1 2; do
    for l in "${LOOPS[@]}"; do loop off "$l"; done
    start_guard false
    for l in "${LOOPS[@]}"; do loop on "$l"; done
    stop_daemon
done

start_guard true
for l in "${LOOPS[@]}"; do
    daemon_idle
    before=$(status_json | jq -c '.hook_costs')
    "$CALL" "$l" "$(calls_of "$l")" >/dev/null
    after=$(status_json | jq -c '.hook_costs')
    # Programs that ran during the loop: runs per loop call and the kernel's ns per run.
    jq -nc --argjson b "$before" --argjson a "$after" --argjson calls "$(calls_of "$l")" '
        [ $a[] as $x | ($b[] | select(.name == $x.name)) as $y
          | {name: $x.name, runs: ($x.runs - $y.runs), ns: ($x.run_time_ns - $y.run_time_ns)}
          | select(.runs > 0)
          | {name, runs_per_call: (.runs / $calls), ns_per_run: ((.ns / .runs * 10 | round) / 10)} ]' \
        >"$T/hooks-$l.json"
done
stop_daemon
clocksource=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)

for l in "${LOOPS[@]}"; do
    jq -sc --arg loop "$l" --arg cs "$clocksource" --argjson calls "$(calls_of "$l")" \
        --slurpfile hooks "$T/hooks-$l.json" '
        def median: sort | if length % 2 == 1 then .[length / 2 | floor]
                           else (.[length / 2 - 1] + .[length / 2]) / 2 end;
        def r1: . * 10 | round / 10;
        [ .[] | select(.loop == $loop) ] as $s
        | ([ $s[] | select(.phase == "off") | .ns_per_call ] | median) as $off
        | ([ $s[] | select(.phase == "on") | .ns_per_call ] | median) as $on
        | {loop: $loop, calls: $calls, clocksource: $cs,
           ns_per_call_off: ($off | r1), ns_per_call_on: ($on | r1),
           added_ns_per_call: ($on - $off | r1),
           samples: [ $s[] | {phase, ns_per_call: (.ns_per_call | r1)} ],
           per_call: [ $hooks[0][] | select(.runs_per_call >= 0.5) | {name, ns_per_run} ],
           programs: $hooks[0]}
        | "RESULT " + tojson' -r "$T/samples.jsonl"
done
