# Live migration under clockguard: the vmclock machine (a guest of QEMU 10 with
# `-device vmclock`, Debian's 7.2 kernel and its ptp_vmclock driver) is saved to a file
# by the host and restored from it in a new QEMU, as a live migration or a snapshot
# restore does. QEMU changes the device's disruption marker on the restore. clockguard
# follows the device: the restore is journaled as a time jump (vmclock_disruption), the
# ClockBound segment says Disrupted with the device's new marker, the NTP sources are
# polled at once and the segment is synchronized again once measured. ClockBound's own
# client (which compares the device's marker with the segment's itself, and says Unknown
# while they differ) reads the segment throughout; cg-ntpref vmclock-watch times it and the
# segment from its first reading of the new marker.
# cg-timeout: 400
source "$CG_REPO/tests/vm/lib.sh"
need_vm
[[ -e /dev/vmclock0 ]] || skip "no /dev/vmclock0 (the vmclock machine has one: xtask/src/vmclock_vm.rs)"

REF="$CG_BIN_DIR/cg-ntpref"
PARAMS="$CG_TEST_TMP/ref.json"
start_reference "$PARAMS" "$CG_TEST_TMP/ref.log" --listen 127.0.0.1:12330 --offset-s 0
ref_pid=$REF_PID
watcher=""
trap 'kill $ref_pid $watcher 2>/dev/null || true; stop_daemon' EXIT

SEGMENT="$CG_TEST_TMP/clockbound/shm0"
cat >"$CG_TEST_TMP/vmclock.toml" <<EOF2
mode = "guard"
[guard]
defer_to_time_services = false
exclusive_discipline = true
[ntp]
servers = ["127.0.0.1:12330"]
minpoll = 1
maxpoll = 2
[bound]
path = "$SEGMENT"
[timers]
vmclock = "/dev/vmclock0"
EOF2
start_daemon --config "$CG_TEST_TMP/vmclock.toml"
status=$("$CG" status --json --runtime-dir "$RUNTIME")
echo "vmclock before: $(echo "$status" | jq -c '.vm.vmclock')"
marker=$(echo "$status" | jq -e '.vm.vmclock.page.disruption_marker') \
    || fail "clockguard does not follow /dev/vmclock0: $(echo "$status" | jq -c '.vm.vmclock')"
echo "$status" | jq -e '.vm.vmclock.readers_compare == true' >/dev/null \
    || fail "the segment does not announce disruption support: $(echo "$status" | jq -c '.vm.vmclock')"
synced=$(wait_now 900 '.status == "synchronized"') || fail "not synchronized in 90 s: $synced"
echo "$synced" | jq -e ".disruption_marker == $marker" >/dev/null \
    || fail "the bound's marker is not the device's ($marker): $(echo "$synced" | jq -c .)"

"$REF" vmclock-watch --segment "$SEGMENT" --ready "$CG_TEST_TMP/watch.ready" \
    >"$CG_TEST_TMP/watch.json" 2>"$CG_TEST_TMP/watch.err" &
watcher=$!
for _ in $(seq 1 100); do [[ -e "$CG_TEST_TMP/watch.ready" ]] && break; sleep 0.1; done
[[ -e "$CG_TEST_TMP/watch.ready" ]] || fail "vmclock-watch did not start: $(cat "$CG_TEST_TMP/watch.err")"
# The host saves the guest to a file and restores it in a new QEMU (a migration).
echo "CG-VMCLOCK-MIGRATE" >/dev/console
wait "$watcher" || fail "vmclock-watch: $(cat "$CG_TEST_TMP/watch.err")"
watcher=""
result=$(cat "$CG_TEST_TMP/watch.json")
echo "after the restore: $result"
echo "$result" | jq -e ".from_marker == $marker and .to_marker != .from_marker" >/dev/null \
    || fail "the device's marker did not change"
echo "$result" | jq -e '.segment_disrupted_after_us != null and .segment_marker_then == .to_marker' >/dev/null \
    || fail "the segment did not say Disrupted with the device's new marker within 5 s"
echo "$result" | jq -e '.client_distrusts_after_us != null and .client_disrupted_after_us != null' >/dev/null \
    || fail "ClockBound's client did not stop trusting the segment, or never said Disrupted"
echo "$result" | jq -e '.client_synchronized_reads_before_disrupted == 0' >/dev/null \
    || fail "ClockBound's client read Synchronized with the new marker before clockguard re-measured"
echo "$result" | jq -e '.resynchronized_after_s != null' >/dev/null \
    || fail "the segment was not synchronized again within 120 s"
echo "METRIC vmclock restore to segment Disrupted: $(echo "$result" | jq -r .segment_disrupted_after_us) us"
echo "METRIC vmclock restore to ClockBound's client distrusting the segment: $(echo "$result" | jq -r .client_distrusts_after_us) us"
echo "METRIC vmclock restore to ClockBound's client Disrupted: $(echo "$result" | jq -r .client_disrupted_after_us) us"
echo "METRIC vmclock restore to synchronized again: $(echo "$result" | jq -r .resynchronized_after_s) s"

# What else the daemon did around the restore (a late read of the page shows why here).
grep -E "vmclock|bound:|timers:|NTP:" "$CG_TEST_TMP/daemon.log" | sed 's/\x1b\[[0-9;]*m//g' | tail -n 12
new_marker=$(echo "$result" | jq .to_marker)
status=$("$CG" status --json --runtime-dir "$RUNTIME")
echo "vmclock after: $(echo "$status" | jq -c '.vm.vmclock')"
echo "$status" | jq -e ".vm.vmclock.disruptions == 1 and .vm.vmclock.page.disruption_marker == $new_marker" >/dev/null \
    || fail "status does not show the disruption: $(echo "$status" | jq -c '.vm.vmclock')"
echo "$status" | jq -e '.daemon.jumps.vmclock_disruption == 1' >/dev/null \
    || fail "not counted as a time jump: $(echo "$status" | jq -c '.daemon.jumps')"
"$CG" status --runtime-dir "$RUNTIME" | grep -E "^vmclock: /dev/vmclock0, disruption marker" \
    || fail "the status text has no vmclock line"
record=$(jq -c 'select(.kind == "vmclock_disruption")' "$STATE/journal.jsonl")
echo "journaled: $record"
# QEMU 10 bumps only the marker on a restore; a QEMU with the VM generation counter bumps
# that too, and the record then says snapshot_restored.
echo "$record" | jq -e "select((.cause == \"migrated\" or .cause == \"snapshot_restored\") and .detail.marker == $new_marker)" >/dev/null \
    || fail "no vmclock_disruption record with the new marker in the journal"
# When the daemon read the new marker (its poll: every 10 ms), against the watcher's first
# reading of it (every 1 ms).
daemon_after_ms=$(jq -n --argjson r "$record" --argjson w "$result" \
    '(($r.detail.at_mono_ns - $w.seen_mono_ns) / 1e6 * 1000 | round) / 1000')
echo "METRIC vmclock new marker read by clockguard, after the watcher: $daemon_after_ms ms"
# The burst after the disruption, not one from before it.
sed -n '/bound: disrupted (Vmclock/,$p' "$CG_TEST_TMP/daemon.log" \
    | grep -q "NTP: the clock was disrupted: polling every source now" \
    || fail "the NTP sources were not polled at once after the disruption"
"$CG" audit --verify --state-dir "$STATE" >/dev/null || fail "the journal does not verify"
echo "PASS"
