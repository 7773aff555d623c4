# The Prometheus alerting rules clockguard ships (packaging/prometheus/clockguard-rules.yml):
# Prometheus's own promtool accepts them, and their unit tests on synthetic series pass
# (each alert fires where it should, with its labels and rendered annotations, and stays
# quiet where it should not). That every metric they name is one clockguard exposes is a
# unit test in clockguard/src/metrics.rs.
set -euo pipefail
fail() { echo "FAIL: $*"; exit 1; }
PROMTOOL="$CG_REPO/target/tools/prometheus/usr/bin/promtool"
cd packaging/prometheus
"$PROMTOOL" check rules clockguard-rules.yml || fail "promtool check rules rejects clockguard-rules.yml"
"$PROMTOOL" test rules clockguard-rules.test.yml || fail "the rules' unit tests fail"
alerts=$(grep -c '^      - alert: ' clockguard-rules.yml)
tested=$(grep -oE 'alertname: [A-Za-z]+' clockguard-rules.test.yml | sort -u | wc -l)
[[ $tested == "$alerts" ]] || fail "$alerts alerts, $tested of them unit-tested"
echo "PASS: $alerts alerts, each unit-tested"
