# `clockguard check`: a clean guest (clockguard running, one NTP source that answers, no
# second time daemon) has no FAIL and exits 0; with both chrony.conf and ntp.conf present
# the time_services check FAILs with the remedy and the exit status is 2. --json is
# machine-readable. (The guest's /etc is copy-on-write: the host's is untouched.)
source "$(dirname "$0")/lib.sh"
need_vm

REF="$CG_BIN_DIR/cg-ntpref"
PARAMS="$CG_TEST_TMP/ref.json"
"$REF" serve --listen 127.0.0.1:12310 --params "$PARAMS" >"$CG_TEST_TMP/ref.log" 2>&1 &
ref_pid=$!
created=()
cleanup() {
    kill "$ref_pid" 2>/dev/null || true
    for f in "${created[@]}"; do rm -f "$f"; done
    stop_daemon
}
trap cleanup EXIT
for f in /etc/chrony/chrony.conf /etc/chrony.conf /etc/ntp.conf /etc/ntpsec/ntp.conf; do
    [[ ! -e "$f" ]] || fail "$f exists in the guest: not a clean guest"
done
cat >"$CG_TEST_TMP/check.toml" <<EOF2
mode = "observe"
[ntp]
servers = ["127.0.0.1:12310"]
EOF2
start_daemon --config "$CG_TEST_TMP/check.toml"
check() { "$CG" check --config "$CG_TEST_TMP/check.toml" --runtime-dir "$RUNTIME" "$@"; }
# iburst: the source answers within a few seconds.
for _ in $(seq 1 100); do
    "$CG" sources --json --runtime-dir "$RUNTIME" | jq -e '.sources[0].reach != "0"' >/dev/null 2>&1 && break
    sleep 0.2
done

set +e
clean=$(check --json); code=$?
set -e
echo "clean: $clean"
check || true
[[ $code -eq 0 ]] || fail "check exited $code on a clean guest"
jq -e '.overall != "FAIL" and ([.findings[] | select(.verdict == "FAIL")] | length == 0)' <<<"$clean" >/dev/null ||
    fail "a FAIL on a clean guest: $clean"
for name in time_services rtc_local_time bpf_lsm clockguard_hooks ntp_sources; do
    jq -e --arg n "$name" '.findings[] | select(.check == $n) | .verdict == "PASS"' <<<"$clean" >/dev/null ||
        fail "$name is not PASS on a clean guest: $clean"
done
# The kernel's word on its clocksources is judged (under TCG it marks the TSC unstable at
# boot: WARN).
jq -e 'any(.findings[]; .check == "clocksource_stability" and .verdict != "FAIL")' <<<"$clean" >/dev/null ||
    fail "no clocksource_stability finding: $clean"
# Under TCG the timer tail may be long (emulation): WARN is acceptable there, FAIL is not.
overall=$(jq -r .overall <<<"$clean")
echo "clean guest: overall $overall ($(jq -r '.findings[] | select(.verdict != "PASS") | .check' <<<"$clean" | tr '\n' ' '))"

mkdir -p /etc/chrony
echo "server 192.0.2.1 iburst" >/etc/chrony/chrony.conf; created+=(/etc/chrony/chrony.conf)
echo "server 192.0.2.2 iburst" >/etc/ntp.conf; created+=(/etc/ntp.conf)
set +e
both=$(check --json); code=$?
human=$(check); human_code=$?
set -e
echo "$human"
[[ $code -eq 2 && $human_code -eq 2 ]] || fail "check exited $code (json) / $human_code with two time daemons configured"
jq -e '.overall == "FAIL"' <<<"$both" >/dev/null || fail "overall is not FAIL: $both"
bad=$(jq -c '.findings[] | select(.check == "time_services")' <<<"$both")
jq -e '.verdict == "FAIL" and (.message | contains("/etc/chrony/chrony.conf") and contains("/etc/ntp.conf")) and (.remedy | length > 0)' <<<"$bad" >/dev/null ||
    fail "time_services: $bad"
grep -E '^FAIL +time_services' <<<"$human" >/dev/null || fail "no FAIL line in the human output"
grep -E 'remedy: ' <<<"$human" >/dev/null || fail "no remedy in the human output"
grep -E '^overall: FAIL$' <<<"$human" >/dev/null || fail "no overall line"
echo "PASS: clean guest exit 0 ($overall), chrony.conf + ntp.conf: FAIL, exit 2"
