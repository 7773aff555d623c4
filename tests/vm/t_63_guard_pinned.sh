# The guard survives its daemon: in guard mode every hook and map is pinned in bpffs. After
# `kill -9` of the daemon, `date -s`, a raw clock_settime and an ADJ_SETOFFSET are still
# refused (and the clock does not move); the restarted daemon adopts the pinned hooks,
# journals the gap (the previous run killed, when it was last alive) and then the steps
# refused while no daemon ran, read from the pinned ring buffer. A process that takes the
# dead daemon's pid is refused too. The chain verifies across the kill. A clean stop
# releases the pins: the guard ends with the daemon.
source "$(dirname "$0")/lib.sh"
need_vm
PINS=/sys/fs/bpf/clockguard
# Whatever happens, no guard outlives the test (the next tests step the clock).
trap 'stop_daemon; rm -rf "$PINS"' EXIT

cat >"$CG_TEST_TMP/guard.toml" <<EOF
mode = "guard"
[guard]
allow = []
defer_to_time_services = false
EOF
# run_as_pid PID COMMAND...: runs COMMAND as process PID (through ns_last_pid; retried
# while another fork takes the pid first).
run_as_pid() {
    local pid=$1 rc
    shift
    for _ in $(seq 1 50); do
        echo $((pid - 1)) >/proc/sys/kernel/ns_last_pid
        rc=0
        bash -c '[[ $$ == '"$pid"' ]] || exit 99; exec "$@"' run_as_pid "$@" || rc=$?
        [[ $rc -ne 99 ]] && return $rc
    done
    echo "could not run as pid $pid"
    return 98
}

start_daemon --config "$CG_TEST_TMP/guard.toml"
first_pid=$DAEMON_PID
GUARD_HOOKS='["capable","do_adjtimex","do_adjtimex_exit","settime","fentry_clock_adjtime","fentry_clock_settime","fexit_clock_adjtime","fexit_clock_settime"]'
status_json | jq -e --argjson want "$GUARD_HOOKS" '.enforcement.active and .enforcement.pinned != null
    and ([.hooks[] | select(.name as $n | $want | index($n)) | select(.pinned and (.adopted | not))] | length) == ($want | length)' >/dev/null \
    || fail "guard hooks not pinned: $(status_json | jq -c '{pinned: .enforcement.pinned, hooks: [.hooks[] | {name, attached, pinned, adopted, error}]}')"
dir=$(status_json | jq -r .enforcement.pinned)
echo "pinned in $dir: $(ls "$dir/links" | tr '\n' ' ')"
# Let the daemon write its heartbeat (every 2 s).
sleep 2.5

kill -9 "$DAEMON_PID"
wait "$DAEMON_PID" 2>/dev/null || true
DAEMON_PID=""
killed_at=$(date +%s%N)
offset0=$(offset_ns)
target=$(( $(date +%s%N) + 5000000000 ))
expect_refused date-s-while-down date -s "@$(( target / 1000000000 ))"
expect_refused clock_settime-while-down "$CALL" settime-by 3000000000
expect_refused setoffset-while-down "$CALL" setoffset -2000000000
# A process that reuses the dead daemon's pid gets none of its rights: the guard knows
# clockguard by its tgid and its executable.
expect_refused step-from-the-reused-pid run_as_pid "$first_pid" "$CALL" settime-by 3000000000
assert_close "$(offset_ns)" "$offset0" 50000000
sleep 1

start_daemon --config "$CG_TEST_TMP/guard.toml"
status_json | jq -e --argjson want "$GUARD_HOOKS" '.enforcement.active
    and ([.hooks[] | select(.name as $n | $want | index($n)) | select(.adopted and .attached)] | length) == ($want | length)' >/dev/null \
    || fail "guard hooks not adopted: $(status_json | jq -c '[.hooks[] | {name, attached, pinned, adopted, error}]')"
wait_records 1 '.comm == "date" and .verdict == "denied"'
wait_records 1 '.comm == "cg-clockcall" and .verdict == "denied" and .syscall == "clock_settime"'
wait_records 1 '.comm == "cg-clockcall" and .verdict == "denied" and .kind == "step" and .syscall != "clock_settime"'
start=$(audit_json | jq -c 'select(.source == "daemon" and .kind == "start")' | tail -1)
echo "start record: $(echo "$start" | jq -c '{seq, time, detail}')"
echo "$start" | jq -e --argjson pid "$first_pid" '.detail.previous_stop == "unclean" and .detail.previous_pid == $pid
    and .detail.down_at_most_s > 1 and .detail.ring_buffer_drops_while_down == 0
    and (.detail.guard.adopted | index("settime")) != null' >/dev/null || fail "start record: $start"
# The refused steps come after the gap's record, timed inside the gap.
start_seq=$(echo "$start" | jq .seq)
audit_json | jq -s -e --argjson s "$start_seq" --argjson k "$killed_at" '
    [.[] | select(.verdict == "denied")] as $d
    | ($d | length) >= 3
    and ($d | all(.seq > $s and .result == "EPERM" and .clock_was_set == false))
    and ($d | all((.time | sub("\\.[0-9]+Z$"; "Z") | fromdateiso8601) >= ($k / 1e9 | floor)))' >/dev/null \
    || fail "denied records: $(audit_json | jq -c 'select(.verdict == "denied") | {seq, time, comm, syscall, result}')"
audit_json | jq -c 'select(.verdict == "denied" or .source == "daemon") | {seq, time, source, kind, comm, verdict, requested_delta_ns}'
"$CG" audit --verify --state-dir "$STATE" --runtime-dir "$RUNTIME" || fail "the chain does not verify across the kill"

# A clean stop releases the guard: the pins go, steps pass again.
stop_daemon
[[ ! -e "$dir" ]] || fail "pins left after a clean stop: $(ls -R "$dir")"
"$CALL" settime-by 0 >/dev/null || fail "still refused after a clean stop"
audit_json | jq -s -e 'map(select(.source == "daemon" and .kind == "stop")) | last | .detail.guard_released' >/dev/null \
    || fail "no stop record releasing the guard"
echo ok
