# With every eBPF clock hook disabled, the timerfd fallback still notices a step and
# journals it with its size.
source "$(dirname "$0")/lib.sh"
need_vm
cat >"$CG_TEST_TMP/cg.toml" <<TOML
[audit]
disabled_hooks = ["fentry_clock_settime", "fexit_clock_settime", "fentry_settimeofday",
  "fexit_settimeofday", "fentry_adjtimex", "fexit_adjtimex", "fentry_clock_adjtime",
  "fexit_clock_adjtime", "sys_enter_clock_settime", "sys_exit_clock_settime",
  "sys_enter_settimeofday", "sys_exit_settimeofday", "sys_enter_adjtimex", "sys_exit_adjtimex",
  "sys_enter_clock_adjtime", "sys_exit_clock_adjtime", "clock_was_set"]
TOML
start_daemon --config "$CG_TEST_TMP/cg.toml"
status_json | jq -e '.hooks[] | select(.name == "clock_was_set") | (.attached | not) and (.error | test("disabled"))' >/dev/null \
    || fail "status must show the disabled hook"
before=$(offset_ns)
date -s "@$(( $(date +%s) + 4 ))" >/dev/null
after=$(offset_ns)
wait_records 1 '.source == "fallback"'
rec=$(audit_json | jq -c 'select(.source == "fallback")')
echo "$rec" | jq .
[[ $(echo "$rec" | wc -l) -eq 1 ]] || fail "want one fallback record"
delta=$(echo "$rec" | jq .delta_ns)
assert_close "$delta" $(( after - before )) 5000000
echo "METRIC fallback real_jump_ns=$(( after - before )) delta_ns=$delta"
hwclock --hctosys
echo ok
