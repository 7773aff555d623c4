# Timer health on the host, observe mode: the hrtimer_expire_entry hook (tp_btf works here)
# fills the lateness histogram while timers expire, and `status` names the machine's
# hypervisor and clocksource. The Prometheus endpoint (loopback) passes promtool's check
# and carries the histogram. Nothing here changes the clock.
set -euo pipefail
CG="$CG_BIN_DIR/clockguard"
PROMTOOL="$CG_REPO/target/tools/prometheus/usr/bin/promtool"
STATE="$CG_TEST_TMP/state"; RUNTIME="$CG_TEST_TMP/run"
[[ -x "$PROMTOOL" ]] || { echo "no $PROMTOOL: run cargo xtask setup"; exit 1; }
printf 'mode = "observe"\n[metrics]\nlisten = "127.0.0.1:19474"\n' >"$CG_TEST_TMP/metrics.toml"
"$CG" run --config "$CG_TEST_TMP/metrics.toml" --state-dir "$STATE" --runtime-dir "$RUNTIME" >"$CG_TEST_TMP/daemon.log" 2>&1 &
daemon=$!
trap 'kill -TERM "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null; true' EXIT
for _ in $(seq 1 200); do
    "$CG" status --json --runtime-dir "$RUNTIME" >/dev/null 2>&1 && break
    sleep 0.1
done
status() { "$CG" status --json --runtime-dir "$RUNTIME"; }
hook=$(status | jq -c '.hooks[] | select(.name == "hrtimer_expire_entry")')
echo "hook: $hook"
jq -e '.attached == true and .kind == "tp_btf"' <<<"$hook" >/dev/null || { echo "hrtimer hook not attached"; exit 1; }
before=$(status | jq '.timers.lateness.expiries')
# 200 sleeps of 5 ms: each one a CLOCK_MONOTONIC hrtimer (hrtimer_nanosleep).
python3 -c 'import time
for _ in range(200): time.sleep(0.005)'
after=$(status | jq '.timers.lateness.expiries')
echo "expiries: $before -> $after"
[[ $(( after - before )) -ge 200 ]] || { echo "fewer than the 200 sleeps counted"; exit 1; }
status | jq -e '.timers.lateness | .p50_le_ns <= .p99_le_ns and .p99_le_ns <= .max_le_ns and (.buckets | length) >= 1' >/dev/null \
    || { echo "lateness: $(status | jq -c .timers.lateness)"; exit 1; }
status | jq -e '.vm.clocksource != null and (.vm.available_clocksources | length) >= 1' >/dev/null \
    || { echo "vm: $(status | jq -c .vm)"; exit 1; }
human=$("$CG" status --runtime-dir "$RUNTIME")
grep -E '^timer lateness: p50 <= ' <<<"$human" || { echo "$human"; exit 1; }
grep -E '^machine: .*clocksource ' <<<"$human" || { echo "$human"; exit 1; }
curl -sf http://127.0.0.1:19474/metrics >"$CG_TEST_TMP/metrics.txt" || { echo "no /metrics"; exit 1; }
"$PROMTOOL" check metrics <"$CG_TEST_TMP/metrics.txt" || { echo "promtool rejects the exposition:"; cat "$CG_TEST_TMP/metrics.txt"; exit 1; }
for want in '^clockguard_timer_lateness_seconds_count [1-9]' '^clockguard_timer_lateness_seconds_bucket\{le="\+Inf"\} [1-9]' \
    '^clockguard_hook_attached\{hook="hrtimer_expire_entry",kind="tp_btf"\} 1$' '^clockguard_ring_buffer_drops_total 0$' \
    '^# TYPE clockguard_stalls_total counter$'; do
    grep -Eq "$want" "$CG_TEST_TMP/metrics.txt" || { echo "no line matching $want"; exit 1; }
done
om=$(curl -sf -H 'Accept: application/openmetrics-text; version=1.0.0' http://127.0.0.1:19474/metrics)
[[ "$(tail -n 1 <<<"$om")" == "# EOF" ]] || { echo "OpenMetrics asked, not served"; exit 1; }
[[ $(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:19474/other) == 404 ]] || { echo "not a 404"; exit 1; }
echo "METRIC host-timers expiries=$(( after - before )) $(status | jq -r '.timers.lateness | "p50_le_ns=\(.p50_le_ns) p99_le_ns=\(.p99_le_ns)"')"
