# Guard mode started under `ip netns exec`, which remounts /sys without securityfs (as
# containers and systemd-nspawn do): the daemon must not take the missing
# /sys/kernel/security/lsm for a list without `bpf`. It finds the LSMs out another way, says
# how in `status`, refuses `date -s` and an ADJ_SETOFFSET step like a plain start, and
# disciplines the clock from an NTP reference in the same namespace (0.3 s ahead), slewing.
source "$(dirname "$0")/lib.sh"
need_vm

NS=cg-guard-ns
REF="$CG_BIN_DIR/cg-ntpref"
PARAMS="$CG_TEST_TMP/ref.json"
STOP="$CG_TEST_TMP/sampler.stop"
ref_pid=""
# Each step on its own: under set -e a failing command would end the trap half done.
cleanup() {
    [[ -n "$ref_pid" ]] && { kill "$ref_pid" 2>/dev/null || true; }
    touch "$STOP"
    stop_daemon || true
    ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT
ip netns del "$NS" 2>/dev/null || true
ip netns add "$NS"
ip -n "$NS" link set lo up
ip netns exec "$NS" "$REF" serve --listen 127.0.0.1:12300 --params "$PARAMS" --offset-s 0.3 \
    >"$CG_TEST_TMP/ref.log" 2>&1 &
ref_pid=$!
for _ in $(seq 1 100); do [[ -s "$PARAMS" ]] && break; sleep 0.1; done
[[ -s "$PARAMS" ]] || fail "cg-ntpref did not start: $(cat "$CG_TEST_TMP/ref.log")"

# What the daemon will see: no securityfs in the namespace's fresh /sys.
if ip netns exec "$NS" test -e /sys/kernel/security/lsm; then
    fail "ip netns exec kept securityfs mounted: this test would prove nothing"
fi

cat >"$CG_TEST_TMP/guard.toml" <<EOF
mode = "guard"
[guard]
defer_to_time_services = false
max_slew_ppm = 100500
[ntp]
servers = ["127.0.0.1:12300"]
EOF
# The 1 ms sampler runs from before the daemon starts: no step, ever, from then on.
"$CALL" sample "$STOP" >"$CG_TEST_TMP/sampler.json" &
sampler=$!
DAEMON_NETNS="$NS" start_daemon --config "$CG_TEST_TMP/guard.toml"
status_json | jq -c '{lsms, enforcement: (.enforcement | {active, reason, gaps})}'
status_json | jq -e '.enforcement.active == true and (.enforcement.gaps | length) == 0 and .bpf_lsm_active == true' >/dev/null \
    || fail "guard not enforcing under ip netns exec: $(status_json | jq -c '{lsms, enforcement}')"
status_json | jq -e '.lsms.source | test("mounted securityfs|lsm_list_modules")' >/dev/null \
    || fail "status does not say how the LSMs were found: $(status_json | jq -c .lsms)"
status_json | jq -e '[.hooks[] | select(.kind == "lsm") | .attached and (.error == null)] == [true, true]' >/dev/null \
    || fail "LSM hooks: $(status_json | jq -c '[.hooks[] | select(.kind == "lsm")]')"

expect_refused date-s date -s "+5 sec"
expect_refused adjtimex-setoffset "$CALL" setoffset -3000000000
wait_records 1 '.comm == "date" and .verdict == "denied"'
wait_records 1 '.comm == "cg-clockcall" and .kind == "step" and .verdict == "denied"'

# Disciplined from the reference, by slewing: under 5 ms and held for 3 s within 120 s.
watch_within 120 "$CG_TEST_TMP/watch.json" --params "$PARAMS" --until-abs-ns 5000000 --hold-s 3
touch "$STOP"
wait "$sampler"
cat "$CG_TEST_TMP/watch.json"
"$CG" tracking --runtime-dir "$RUNTIME"
jq -e '.converged == true' "$CG_TEST_TMP/watch.json" >/dev/null \
    || fail "not disciplined under 5 ms in 120 s: $(cat "$CG_TEST_TMP/watch.json")"
"$CG" tracking --json --runtime-dir "$RUNTIME" | jq -e '.disciplining == true' >/dev/null \
    || fail "tracking: $("$CG" tracking --json --runtime-dir "$RUNTIME")"
assert_no_step "$CG_TEST_TMP/sampler.json"
# The guard's pins would end with this mount namespace: not pinned, and status says why.
status_json | jq -e '.enforcement.pinned == null and (.enforcement.not_pinned_because | test("mount namespace"))' >/dev/null \
    || fail "pinning under ip netns exec: $(status_json | jq -c '.enforcement | {pinned, not_pinned_because}')"
echo "METRIC guard-netns lsms_from=\"$(status_json | jq -r .lsms.source | cut -c1-60)\" converged_within_s_of_watch=$(jq .converged_after_s "$CG_TEST_TMP/watch.json")"
echo ok
