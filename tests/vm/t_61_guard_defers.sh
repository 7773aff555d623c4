# Guard mode defers to another time service, as Oracle CTSS does: with a chronyd running,
# clockguard observes (status says why) and refuses nothing, but records what guard mode
# would have refused. The eBPF programs' log is off by default: nothing of it appears.
source "$(dirname "$0")/lib.sh"
need_vm

# A process named chronyd (the detection looks for running time daemons by name).
cp /bin/sleep "$CG_TEST_TMP/chronyd"
"$CG_TEST_TMP/chronyd" 300 &
chronyd_pid=$!
trap 'kill $chronyd_pid 2>/dev/null || true; stop_daemon' EXIT
printf 'mode = "guard"\n' >"$CG_TEST_TMP/guard.toml"
start_daemon --config "$CG_TEST_TMP/guard.toml"
status_json | jq -c '{mode, mode_configured, enforcement: .enforcement.reason}'
status_json | jq -e --arg pid "$chronyd_pid" '.mode == "observe" and .mode_configured == "guard" and .enforcement.active == false and (.enforcement.reason | contains("chronyd (running: pid " + $pid + ")"))' >/dev/null \
    || fail "did not defer to chronyd: $(status_json | jq -c '.enforcement')"

before=$(offset_ns)
"$CALL" settime-by 2000000000 >/dev/null || fail "observe mode refused a step"
after=$(offset_ns)
assert_close $(( after - before )) 2000000000 50000000
wait_records 1 '.comm == "cg-clockcall" and .kind == "step" and .result == "0"'
audit_json | jq -e -s 'map(select(.comm == "cg-clockcall" and .kind == "step")) | length >= 1 and all(.[]; .verdict == "would-deny" and .guard.class == "other")' >/dev/null \
    || fail "observe record: $(audit_json | jq -c 'select(.comm == "cg-clockcall")')"
status_json | jq -e '.kernel.guard_would_deny >= 1 and .kernel.guard_denied == 0' >/dev/null \
    || fail "counters: $(status_json | jq -c '.kernel')"
"$CALL" settime-by -2000000000 >/dev/null
# ebpf_log_level is off by default: the programs log nothing (the guard judged the step).
ebpf_lines='guard: (refused|observing, would refuse|allowed) change'
! grep -qE "$ebpf_lines" "$CG_TEST_TMP/daemon.log" \
    || fail "eBPF log lines with ebpf_log_level off: $(grep -E "$ebpf_lines" "$CG_TEST_TMP/daemon.log" | head -2)"
echo ok
