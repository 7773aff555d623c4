# On the VM's kernel (6.1, BTF, bpf LSM) every hook attaches: fentry/fexit on the clock
# syscalls' entry points (their syscall tracepoints are then not needed, and say so), the
# fork/exec tracepoints, fentry on clock_was_set, the guard's do_adjtimex fentry/fexit and
# its LSM settime and capable hooks. With one of a syscall's fentry/fexit pair disabled,
# that side's tracepoint stands in for it, and a call is still journaled once.
source "$(dirname "$0")/lib.sh"
need_vm
start_daemon
s=$(status_json)
echo "$s" | jq .
not_attached=$(echo "$s" | jq -r '.hooks[] | select((.attached | not) and .replaced_by == null) | "\(.name): \(.error)"')
[[ -z "$not_attached" ]] || fail "hooks not attached: $not_attached"
for h in fentry_clock_settime fexit_clock_settime fentry_settimeofday fexit_settimeofday fentry_adjtimex fexit_adjtimex fentry_clock_adjtime fexit_clock_adjtime \
        sched_process_exec clock_was_set do_adjtimex do_adjtimex_exit settime capable timerfd_cancel_on_set; do
    echo "$s" | jq -e --arg h "$h" '.hooks[] | select(.name == $h and .attached)' >/dev/null || fail "no attached hook $h"
done
echo "$s" | jq -e '[.hooks[] | select(.kind == "tracepoint" and (.name | startswith("sys_")))]
    | length == 8 and all(.attached == false and .replaced_by
        == ((if (.name | startswith("sys_enter_")) then "fentry_" else "fexit_" end)
            + (.name | sub("^sys_(enter|exit)_"; ""))))' >/dev/null \
    || fail "the syscall tracepoints must be replaced by fentry/fexit: $(echo "$s" | jq -c '[.hooks[] | select(.kind == "tracepoint")]')"
"$CG" status --runtime-dir "$RUNTIME" | grep -E '^sys_enter_clock_settime +tracepoint +not needed +fentry_clock_settime( |$)' \
    || fail "status text must say the tracepoint is not needed"
# One of the pair missing: that side's tracepoint attaches instead, and each call is one
# record.
stop_daemon
# (A misspelled name disables nothing, and the log says so.)
printf '[audit]\ndisabled_hooks = ["fexit_clock_settime", "fexit_clock_setime"]\n' >"$CG_TEST_TMP/mixed.toml"
start_daemon --config "$CG_TEST_TMP/mixed.toml"
grep -q 'audit.disabled_hooks: no hook is named "fexit_clock_setime"' "$CG_TEST_TMP/daemon.log" \
    || fail "a disabled_hooks name that matches no hook must be warned about"
status_json | jq -e '[.hooks[] | select(.name | test("^(fentry_clock_settime|sys_enter_clock_settime|sys_exit_clock_settime)$")) | .attached] == [true, false, true]' >/dev/null \
    || fail "with fexit_clock_settime disabled, fentry and sys_exit must be attached, not sys_enter: $(status_json | jq -c '[.hooks[] | select(.name | test("clock_settime"))]')"
"$CALL" settime-invalid 5 >/dev/null
wait_records 5 '.syscall == "clock_settime" and .result == "EINVAL"'
sleep 1
n=$(audit_json | jq -c 'select(.syscall == "clock_settime" and .result == "EINVAL")' | wc -l)
[[ "$n" == 5 ]] || fail "5 calls seen both ways must be 5 records, got $n"
stop_daemon
# The other side: fexit with the sys_enter tracepoint. A step (the exit sends it) is one
# record: an exit hook of each kind would send it twice.
printf '[audit]\ndisabled_hooks = ["fentry_clock_settime"]\n' >"$CG_TEST_TMP/mixed-exit.toml"
start_daemon --config "$CG_TEST_TMP/mixed-exit.toml"
status_json | jq -e '[.hooks[] | select(.name | test("^(fexit_clock_settime|sys_enter_clock_settime|sys_exit_clock_settime)$")) | .attached] == [true, true, false]' >/dev/null \
    || fail "with fentry_clock_settime disabled, fexit and sys_enter must be attached, not sys_exit: $(status_json | jq -c '[.hooks[] | select(.name | test("clock_settime"))]')"
step_pid=$("$CALL" settime-by 1000 | jq .pid)
wait_records 1 ".pid == $step_pid"
sleep 1
n=$(audit_json | jq -c --argjson p "$step_pid" 'select(.pid == $p)' | wc -l)
[[ "$n" == 1 ]] || fail "a step seen by sys_enter and fexit must be 1 record, got $n: $(audit_json | jq -c --argjson p "$step_pid" 'select(.pid == $p)')"
audit_json | jq -e --argjson p "$step_pid" 'select(.pid == $p) | .kind == "step" and .result == "0" and .clock_was_set and .detail == null' >/dev/null \
    || fail "the step's record is not a whole one: $(audit_json | jq -c --argjson p "$step_pid" 'select(.pid == $p)')"
stop_daemon
start_daemon
s=$(status_json)
echo "$s" | jq -e '.bpf_lsm_active == true' >/dev/null || fail "bpf LSM not active in the VM"
echo "$s" | jq -e '.enforcement.active == false' >/dev/null || fail "observe mode must not claim enforcement"
echo "$s" | jq -e '.kernel_release | type == "string"' >/dev/null || fail "status names no kernel release"
# The hrtimer hook reads this kernel's layout right: expiries counted, none unreadable (7.2
# moved struct hrtimer's fields and passes `now` by value; a wrong guess faults).
sleep 2
s=$(status_json)
echo "$s" | jq -c '{hrtimer: (.hooks[] | select(.name == "hrtimer_expire_entry") | .target), expiries: .timers.lateness.expiries, timer_read_faults: .kernel.timer_read_faults}'
echo "$s" | jq -e '.timers.lateness.expiries > 0 and .kernel.timer_read_faults == 0' >/dev/null \
    || fail "the hrtimer hook does not read this kernel's timers: $(echo "$s" | jq -c '{lateness: .timers.lateness.expiries, kernel: .kernel}')"
# Guard mode without its LSM hook must say enforcement is off and why, never pretend.
stop_daemon
printf 'mode = "guard"\n[audit]\ndisabled_hooks = ["settime"]\n[guard]\ndefer_to_time_services = false\n' >"$CG_TEST_TMP/nolsm.toml"
start_daemon --config "$CG_TEST_TMP/nolsm.toml"
status_json | jq -e '.mode == "guard" and .enforcement.active == false and (.enforcement.reason | test("OFF.*settime hook could not attach \\(disabled in the configuration\\)"))' >/dev/null \
    || fail "guard mode must say enforcement is off: $(status_json | jq -c .enforcement)"
# ... and then refuses nothing.
"$CALL" settime-by 0 >/dev/null || fail "refused although enforcement is off"
echo "ok"
