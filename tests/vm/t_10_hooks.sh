# On the VM's kernel (6.1, BTF, bpf LSM) every hook attaches: the syscall tracepoints,
# the fork/exec tracepoints, fentry on clock_was_set, the guard's do_adjtimex fentry/fexit
# and its LSM settime and capable hooks.
source "$(dirname "$0")/lib.sh"
need_vm
start_daemon
s=$(status_json)
echo "$s" | jq .
not_attached=$(echo "$s" | jq -r '.hooks[] | select(.attached | not) | "\(.name): \(.error)"')
[[ -z "$not_attached" ]] || fail "hooks not attached: $not_attached"
for h in sys_enter_clock_settime sys_exit_adjtimex sched_process_exec clock_was_set do_adjtimex do_adjtimex_exit settime capable timerfd_cancel_on_set; do
    echo "$s" | jq -e --arg h "$h" '.hooks[] | select(.name == $h and .attached)' >/dev/null || fail "no attached hook $h"
done
echo "$s" | jq -e '.bpf_lsm_active == true' >/dev/null || fail "bpf LSM not active in the VM"
echo "$s" | jq -e '.enforcement.active == false' >/dev/null || fail "observe mode must not claim enforcement"
# Guard mode without its LSM hook must say enforcement is off and why, never pretend.
stop_daemon
printf 'mode = "guard"\n[audit]\ndisabled_hooks = ["settime"]\n[guard]\ndefer_to_time_services = false\n' >"$CG_TEST_TMP/nolsm.toml"
start_daemon --config "$CG_TEST_TMP/nolsm.toml"
status_json | jq -e '.mode == "guard" and .enforcement.active == false and (.enforcement.reason | test("OFF.*settime hook could not attach \\(disabled in the configuration\\)"))' >/dev/null \
    || fail "guard mode must say enforcement is off: $(status_json | jq -c .enforcement)"
# ... and then refuses nothing.
"$CALL" settime-by 0 >/dev/null || fail "refused although enforcement is off"
echo "ok"
