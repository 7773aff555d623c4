# Guard mode against a real time daemon: chronyd 4.3 told to step (`makestep 1 -1`) towards
# a reference 3 s ahead. At start chronyd probes ADJ_SETOFFSET with a zero offset, which
# cannot move the clock and passes (refused, chronyd would decide the kernel lacks it); its
# real step (ADJ_SETOFFSET +3 s) is refused in the kernel by clockguard (guarding although
# chronyd runs: defer_to_time_services = false): EPERM, the journal has the denied step with
# chronyd's +3 s request, and the clock did not jump.
source "$(dirname "$0")/lib.sh"
need_vm

CHRONYD="$CG_REPO/target/tools/chrony/usr/sbin/chronyd"
[[ -x "$CHRONYD" ]] || fail "no $CHRONYD: run cargo xtask setup"
REF="$CG_BIN_DIR/cg-ntpref"
"$REF" serve --listen 127.0.0.1:12300 --params "$CG_TEST_TMP/ref.json" --offset-s 3 >"$CG_TEST_TMP/ref.log" 2>&1 &
ref_pid=$!
chronyd_pid=""
trap 'kill $chronyd_pid "$ref_pid" 2>/dev/null; stop_daemon' EXIT

printf 'mode = "guard"\n[guard]\ndefer_to_time_services = false\n' >"$CG_TEST_TMP/guard.toml"
start_daemon --config "$CG_TEST_TMP/guard.toml"
status_json | jq -e '.enforcement.active == true' >/dev/null || fail "guard not active"
offset0=$(offset_ns)

cat >"$CG_TEST_TMP/chrony.conf" <<EOF2
server 127.0.0.1 port 12300 iburst minpoll 0 maxpoll 0
makestep 1 -1
cmdport 0
pidfile $CG_TEST_TMP/chronyd.pid
EOF2
"$CHRONYD" -d -u root -f "$CG_TEST_TMP/chrony.conf" >"$CG_TEST_TMP/chronyd.log" 2>&1 &
chronyd_pid=$!
filter='.comm == "chronyd" and .verdict == "denied" and (.requested_delta_ns | fabs) > 1000000000'
rec=""
for _ in $(seq 1 300); do
    rec=$(audit_json | jq -c "select($filter)" | head -1)
    [[ -n "$rec" ]] && break
    sleep 0.1
done
kill "$chronyd_pid" 2>/dev/null || true
wait "$chronyd_pid" 2>/dev/null || true
chronyd_pid=""
cat "$CG_TEST_TMP/chronyd.log"
[[ -n "$rec" ]] || fail "no denied step by chronyd in the journal: $(audit_json | jq -c 'select(.comm == "chronyd")')"
grep -q "doesn't support ADJ_SETOFFSET" "$CG_TEST_TMP/chronyd.log" && fail "chronyd's zero-offset probe was refused"
audit_json | jq -e -s 'any(.[]; .comm == "chronyd" and .requested.setoffset_ns == 0 and .result == "0")' >/dev/null \
    || fail "chronyd's zero-offset probe is not journaled as passed: $(audit_json | jq -c 'select(.comm == "chronyd")')"
echo "$rec" | jq .
echo "$rec" | jq -e '.result == "EPERM" and .guard.judged == "step" and .guard.class == "other" and .clock_was_set == false' >/dev/null \
    || fail "chronyd's step: $rec"
assert_close "$(echo "$rec" | jq .requested_delta_ns)" 3000000000 100000000
# chronyd may have started slewing after the refusal; a step would show as ~3 s.
jumped=$(( $(offset_ns) - offset0 ))
assert_close "$jumped" 0 100000000
echo "METRIC guard-chronyd-makestep requested_delta_ns=$(echo "$rec" | jq .requested_delta_ns) realtime_minus_monotonic_change_ns=$jumped"
