#!/usr/bin/env bash
# Timer health: the whole VM stopped from outside (SIGSTOP to QEMU for 5 s, then SIGCONT,
# as a host under load or a live migration does) is journaled as a stall of about 5 s,
# with its cause, and shows in the hrtimer lateness histogram and the Prometheus metrics.
# Then a clocksource switch there and back is journaled twice, and never as a jump.
source "$(dirname "$0")/lib.sh"
need_vm

PROMTOOL="$CG_REPO/target/tools/prometheus/usr/bin/promtool"
printf 'mode = "observe"\n[metrics]\nlisten = "127.0.0.1:19474"\n' >"$CG_TEST_TMP/metrics.toml"
start_daemon --config "$CG_TEST_TMP/metrics.toml"
status_json | jq -e '.hooks[] | select(.name == "hrtimer_expire_entry") | .attached' >/dev/null ||
    fail "the hrtimer hook is not attached: $(status_json | jq -c '.hooks[] | select(.name == "hrtimer_expire_entry")')"
vm=$(status_json | jq -c .vm)
echo "vm facts: $vm"
[[ $(jq -r .hypervisor <<<"$vm") != null ]] || fail "no hypervisor recognised in the VM: $vm"
[[ $(jq -r .clocksource <<<"$vm") != null ]] || fail "no clocksource: $vm"
expiries_before=$(status_json | jq '.timers.lateness.expiries')

paused_s=$(vm_pause 5)
echo "the host paused the VM for $paused_s s"

wait_records 1 '.kind == "stall" and .delta_ns > 1000000000'
stall=$(audit_json | jq -c 'select(.kind == "stall" and .delta_ns > 1000000000)' | tail -n 1)
echo "stall record: $stall"
[[ $(jq -r .source <<<"$stall") == timers ]] || fail "source is not timers: $stall"
if [[ $(jq -r .cause <<<"$stall") != vm_paused ]]; then
    # Every stall record, to tell a pause split per vCPU from a missing one.
    audit_json | jq -c 'select(.kind == "stall") | {seq, cause, delta_ns, cpus: .detail.cpus,
        started_mono_ns: .detail.started_mono_ns, ended_mono_ns: .detail.ended_mono_ns, timers: .detail.timers}'
    fail "cause is not vm_paused: $stall"
fi
delta_ns=$(jq .delta_ns <<<"$stall")
paused_ns=$(awk -v s="$paused_s" 'BEGIN { printf "%.0f", s * 1e9 }')
# Within 10 % of the pause the host measured.
assert_close "$delta_ns" "$paused_ns" $(( paused_ns / 10 ))
jq -e '.detail.cpus | length >= 1' <<<"$stall" >/dev/null || fail "no CPU named: $stall"
jq -e '.detail.timers | length >= 1' <<<"$stall" >/dev/null || fail "no late timer named: $stall"

"$CG" audit --state-dir "$STATE" | grep -E 'timers +- +stall .*cause: vm_paused' ||
    fail "audit does not show the stall: $("$CG" audit --state-dir "$STATE")"
"$CG" status --runtime-dir "$RUNTIME" | grep -E '^stalls: [1-9].*vm_paused' ||
    fail "status does not show the stall"

timers=$(status_json | jq -c .timers)
echo "timers: $(jq -c '{late_events, found, p99_le_ns: .lateness.p99_le_ns, max_le_ns: .lateness.max_le_ns}' <<<"$timers")"
# The pause lies in the histogram's top: a bucket at or above 2^32 ns (4.3 s).
jq -e '.lateness.max_le_ns >= 4294967295' <<<"$timers" >/dev/null ||
    fail "no expiry late by 4 s or more in the histogram: $timers"
jq -e --argjson before "$expiries_before" '.lateness.expiries > $before' <<<"$timers" >/dev/null ||
    fail "the histogram did not grow: $timers"
jq -e '.found.stalls >= 1 and .late_events >= 1' <<<"$timers" >/dev/null || fail "not counted: $timers"
# The metrics say what status says. A later, shorter stall (a loaded emulator has them) may
# follow the pause: so compare with status read just before and after the scrape, retrying
# while a stall lands in between, rather than expecting the 5 s pause to be the last.
for attempt in 1 2 3 4 5; do
    found_before=$(status_json | jq -c .timers.found)
    metrics=$(curl -sf http://127.0.0.1:19474/metrics) || fail "no /metrics"
    found=$(status_json | jq -c .timers.found)
    [[ "$found" == "$found_before" ]] && break
    sleep 1
done
[[ "$found" == "$found_before" ]] || fail "stalls kept coming for 5 scrapes: $found"
"$PROMTOOL" check metrics <<<"$metrics" || fail "promtool rejects the exposition"
for want in "^clockguard_stalls_total $(jq .stalls <<<"$found")\$" \
    '^clockguard_time_jumps_total\{cause="vm_paused"\} [1-9]' \
    '^clockguard_timer_lateness_seconds_bucket\{le="4.294967295"\} '; do
    grep -Eq "$want" <<<"$metrics" || fail "no metric line matching $want"
done
last_stall_s=$(awk '/^clockguard_last_stall_seconds / { print $2 }' <<<"$metrics")
[[ -n "$last_stall_s" ]] || fail "no clockguard_last_stall_seconds"
# Seconds in the metric, ns in status: the same stall to the ns.
assert_close "$(awk -v s="$last_stall_s" 'BEGIN { printf "%.0f", s * 1e9 }')" \
    "$(jq .last_stall.duration_ns <<<"$found")" 1
# The histogram's top: expiries above 4.29 s are in +Inf minus the 4.29 s bucket.
above=$(awk '/^clockguard_timer_lateness_seconds_bucket\{le="4.294967295"\}/ { b = $2 } /^clockguard_timer_lateness_seconds_bucket\{le="\+Inf"\}/ { i = $2 } END { print i - b }' <<<"$metrics")
[[ "$above" -ge 1 ]] || fail "no expiry above 4.29 s in the metrics histogram"
# A clocksource switch (as the watchdog does when it finds one unstable) is journaled, and
# it is not mistaken for a clocksource jump.
CS=/sys/devices/system/clocksource/clocksource0
original=$(cat "$CS/current_clocksource")
other=$(tr ' ' '\n' <"$CS/available_clocksource" | grep -vx "$original" | grep -m1 .) ||
    fail "only one clocksource available: $(cat "$CS/available_clocksource")"
trap 'echo "$original" >"$CS/current_clocksource"; stop_daemon' EXIT
# The kernel's watchdog may have switched already after the pause (7.2 marks the TSC
# unstable then): count from here.
changes_before=$(status_json | jq '.timers.found.clocksource_changes')
echo "$other" >"$CS/current_clocksource"
wait_records 1 ".kind == \"clocksource_change\" and .detail.to == \"$other\""
echo "$original" >"$CS/current_clocksource"
wait_records 1 ".kind == \"clocksource_change\" and .detail.to == \"$original\""
audit_json | jq -c 'select(.kind == "clocksource_change")'
jumps=$(audit_json | jq -c 'select(.kind == "clocksource_jump")' | wc -l)
[[ "$jumps" -eq 0 ]] || fail "a clocksource switch was taken for a jump: $(audit_json | jq -c 'select(.kind == "clocksource_jump")')"
status_json | jq -e --argjson before "$changes_before" '.timers.found.clocksource_changes == $before + 2' >/dev/null ||
    fail "switches not counted: $(status_json | jq -c .timers.found)"
# The kernel's own words on the switch, followed live from /dev/kmsg.
messages=$(status_json | jq -c '.vm.kernel_clock_messages')
echo "kernel clock messages: $messages"
jq -e --arg cs "$other" 'any(.[]; .kind == "clocksource_switch" and .before_start == false
    and (.text | endswith("Switched to clocksource " + $cs)))' <<<"$messages" >/dev/null ||
    fail "the kernel's switch to $other is not in status.vm.kernel_clock_messages"
# A program cannot pass for the clocksource watchdog: a line it writes into /dev/kmsg has a
# facility of its own and is not taken for the kernel's verdict.
echo "clocksource: timekeeping watchdog on CPU0: Marking clocksource 'cgtest' as unstable because the skew is too large:" >/dev/kmsg
sleep 1
# (The kernel's own verdict may be there: 7.2's watchdog marks the TSC unstable after the
# pause above. Only the forged line must not be.)
forged='select(.kind == "clocksource_unstable" and ((.detail.clocksource == "cgtest") or (.detail.kernel_message // "" | contains("cgtest"))))'
[[ $(audit_json | jq -c "$forged" | wc -l) == 0 ]] ||
    fail "a line written into /dev/kmsg was journaled as the kernel's: $(audit_json | jq -c "$forged")"
status_json | jq -e '[.vm.kernel_clock_messages[] | select(.text | contains("cgtest"))] | length == 0' >/dev/null ||
    fail "a line written into /dev/kmsg is listed as the kernel's"
echo "PASS: a ${paused_s} s pause became a $(awk -v d="$delta_ns" 'BEGIN { printf "%.3f", d / 1e9 }') s stall (vm_paused)"
