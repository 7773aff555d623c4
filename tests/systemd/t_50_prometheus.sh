# A real Prometheus (Debian's package) scrapes clockguard's /metrics and evaluates the alert
# rules the package ships (/usr/share/clockguard/prometheus/clockguard-rules.yml): a `date -s`
# refused in guard mode makes ClockguardStepRefused fire in Prometheus's API.
source "$(dirname "$0")/lib.sh"
ensure_installed
PROM=/etc/prometheus/prometheus.yml
RULES=/usr/share/clockguard/prometheus/clockguard-rules.yml
cp "$CONF" "$CG_TEST_TMP/clockguard.toml.orig"
cp "$PROM" "$CG_TEST_TMP/prometheus.yml.orig"
cleanup() {
    cp "$CG_TEST_TMP/clockguard.toml.orig" "$CONF"
    cp "$CG_TEST_TMP/prometheus.yml.orig" "$PROM"
    systemctl restart clockguard prometheus || true
}
trap cleanup EXIT
[[ -f "$RULES" ]] || fail "the package does not ship $RULES"

sed -i 's|^# listen = "127.0.0.1:9474"$|listen = "127.0.0.1:9474"|' "$CONF"
grep -q '^listen = "127.0.0.1:9474"' "$CONF" || fail "no [metrics] listen line to enable in $CONF"
set_mode guard
systemctl restart clockguard
wait_active
curl -fsS http://127.0.0.1:9474/metrics | grep -E '^clockguard_steps_refused_total' ||
    fail "clockguard's /metrics has no clockguard_steps_refused_total"

cat >"$PROM" <<YML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $RULES
scrape_configs:
  - job_name: clockguard
    static_configs:
      - targets: ["127.0.0.1:9474"]
YML
systemctl restart prometheus
# api PATH: Prometheus's answer, or nothing while it is not up yet (never an error).
# -g: PromQL's [1m] is not a curl URL range.
api() { curl -fsSg "http://127.0.0.1:9090/api/v1/$1" 2>/dev/null || true; }
# Up, scraping, and with a few samples of the counter (increase() needs two).
deadline=$(( SECONDS + 120 ))
n=0
while (( SECONDS < deadline )); do
    n=$(api 'query?query=count_over_time(clockguard_steps_refused_total[1m])' | jq -r '.data.result[0].value[1] // 0')
    n=${n:-0}
    (( n >= 3 )) && break
    sleep 0.5
done
if (( n < 3 )); then
    systemctl status prometheus --no-pager -l | tail -n 15 || true
    fail "Prometheus did not scrape clockguard within 120 s: targets $(api targets | jq -c '[.data.activeTargets[] | {health, lastError}]')"
fi
echo "Prometheus holds $n samples of clockguard_steps_refused_total"
api rules | jq -e '[.data.groups[].rules[] | select(.type == "alerting")] | length >= 7' >/dev/null ||
    fail "Prometheus did not load the shipped rules: $(api rules | jq -c '.data.groups | length')"
api alerts | jq -e '[.data.alerts[] | select(.labels.alertname == "ClockguardStepRefused")] | length == 0' >/dev/null ||
    fail "ClockguardStepRefused is active before any step was refused"

expect_refused "date -s" date -s '+5 sec'
refused_at=$(date +%s.%N)
state=""
deadline=$(( SECONDS + 60 ))
while (( SECONDS < deadline )); do
    state=$(api alerts | jq -r '[.data.alerts[] | select(.labels.alertname == "ClockguardStepRefused")][0].state // empty')
    [[ "$state" == firing ]] && break
    sleep 0.5
done
alert=$(api alerts | jq -c '.data.alerts[] | select(.labels.alertname == "ClockguardStepRefused")')
echo "alert: $alert"
[[ "$state" == firing ]] || fail "ClockguardStepRefused is not firing 60 s after the refusal: '$state'"
echo "METRIC prometheus_step_refused_alert_firing_s=$(awk -v a="$refused_at" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')"
jq -e '.labels.severity == "warning" and (.annotations.runbook | contains("clockguard audit"))' <<<"$alert" >/dev/null ||
    fail "the alert lacks its severity or runbook: $alert"
# What the timer watch made of this daemon's run under systemd, whose sd-event arms its
# timers at 1 ns to be woken at once (not stalls: armed_in_the_past). A figure, not a check:
# under TCG a real stall of a loaded CI machine is possible.
echo "METRIC systemd_timers $(clockguard status --json | jq -r '.timers.found | "stalls=\(.stalls) armed_in_the_past=\(.armed_in_the_past)"')"
