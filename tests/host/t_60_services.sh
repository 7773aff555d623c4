# Tracked services on the host (observe mode, no clock change): the sched_process_exit hook
# reports the death of a tracked process with its signal or exit code, including a worker
# forked after the daemon's last /proc scan (tracked from fork, in the kernel); a worker
# that exits 0 is not a death. Without a time jump a death is journaled as "died" and does
# not fault the service, except with on_any_death, where the keepalived track file flips
# to 1 and `service-check` fails. A TCP probe that stops answering faults after `fall`.
set -euo pipefail
CG="$CG_BIN_DIR/clockguard"
STATE="$CG_TEST_TMP/state"; RUNTIME="$CG_TEST_TMP/run"
fail() { echo "FAIL: $*"; tail -n 20 "$CG_TEST_TMP/daemon.log"; exit 1; }

# Copies of sleep and bash with names of their own, so only the test's processes match.
cp "$(command -v bash)" "$CG_TEST_TMP/cgsvc-master"
cp "$(command -v sleep)" "$CG_TEST_TMP/cgsvc-worker"
cp "$(command -v bash)" "$CG_TEST_TMP/cgsvc-strict"
PORT=19143
cat >"$CG_TEST_TMP/services.toml" <<EOF
mode = "observe"
[metrics]
listen = "127.0.0.1:19475"
[[service]]
name = "relaxed"
comm = ["cgsvc-master"]
track_file = "$CG_TEST_TMP/track/relaxed"
[[service]]
name = "strict"
comm = ["cgsvc-strict"]
on_any_death = true
track_file = "$CG_TEST_TMP/track/strict"
[[service]]
name = "imap"
probe = "127.0.0.1:$PORT"
probe_expect = "* OK"
interval_ms = 200
probe_timeout_ms = 150
fall = 2
track_file = "$CG_TEST_TMP/track/imap"
EOF
# A greeting server for the probe: answers "* OK" until killed.
python3 -c "
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', $PORT)); s.listen(16)
while True:
    c, _ = s.accept(); c.sendall(b'* OK ready\r\n'); c.close()
" &
greeter=$!
# The "master" forks workers on request (a line on its stdin) and waits for them.
mkfifo "$CG_TEST_TMP/master.in"
"$CG_TEST_TMP/cgsvc-master" -c "while read -r cmd; do
    case \$cmd in
        spawn) '$CG_TEST_TMP/cgsvc-worker' 300 & echo \$! >'$CG_TEST_TMP/worker.pid' ;;
        spawn-short) '$CG_TEST_TMP/cgsvc-worker' 0.01 & echo \$! >'$CG_TEST_TMP/short.pid' ;;
    esac
done" <"$CG_TEST_TMP/master.in" &
master=$!
exec 7>"$CG_TEST_TMP/master.in"
"$CG_TEST_TMP/cgsvc-strict" -c 'while :; do sleep 0.2; done' &
strict=$!
echo spawn >&7
"$CG" run --config "$CG_TEST_TMP/services.toml" --state-dir "$STATE" --runtime-dir "$RUNTIME" >"$CG_TEST_TMP/daemon.log" 2>&1 &
daemon=$!
trap 'kill -TERM "$daemon" "$greeter" "$strict" "$master" 2>/dev/null; exec 7>&-; wait "$daemon" 2>/dev/null; true' EXIT
for _ in $(seq 1 200); do
    "$CG" status --json --runtime-dir "$RUNTIME" >/dev/null 2>&1 && break
    sleep 0.1
done
status() { "$CG" status --json --runtime-dir "$RUNTIME"; }
audit() { "$CG" audit --json --state-dir "$STATE"; }
service() { status | jq -c --arg n "$1" '.services[] | select(.name == $n)'; }
# has_record FILTER: the journal holds a record matching FILTER.
has_record() { [[ $(audit | jq -c "select($1)" | wc -l) -ge 1 ]]; }
# wait_for SECONDS CMD...: retries CMD every 0.1 s.
wait_for() {
    local limit=$(( $1 * 10 )); shift
    for _ in $(seq 1 "$limit"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    return 1
}
status | jq -e '.hooks[] | select(.name == "sched_process_exit") | .attached' >/dev/null ||
    fail "sched_process_exit not attached: $(status | jq -c '.hooks[] | select(.name == "sched_process_exit")')"
healthy() { [[ $(service "$1" | jq -r .state) == healthy ]]; }
wait_for 10 healthy relaxed || fail "relaxed not healthy: $(service relaxed)"
wait_for 10 healthy strict || fail "strict not healthy: $(service strict)"
wait_for 10 healthy imap || fail "imap not healthy: $(service imap)"
echo "relaxed: $(service relaxed)"
[[ $(service relaxed | jq .processes) -ge 2 ]] || fail "master and worker not both tracked: $(service relaxed)"
[[ $(cat "$CG_TEST_TMP/track/relaxed") == 0 ]] || fail "track file of a healthy service is not 0"

# 1. A worker the scan saw, killed: journaled with its signal, no fault (no jump).
worker=$(cat "$CG_TEST_TMP/worker.pid")
kill -KILL "$worker"
died() { has_record ".source == \"service\" and .pid == $1"; }
wait_for 10 died "$worker" || fail "the death of $worker was not journaled"
record=$(audit | jq -c --argjson p "$worker" 'select(.source == "service" and .pid == $p)')
echo "death: $record"
jq -e '.kind == "died" and .result == "SIGKILL" and .verdict == "observed" and .comm == "cgsvc-worker"
    and .ppid == '"$master"' and .detail.service == "relaxed" and .detail.jump == null' <<<"$record" >/dev/null ||
    fail "wrong death record: $record"
healthy relaxed || fail "a death without a time jump faulted the service: $(service relaxed)"
[[ $(cat "$CG_TEST_TMP/track/relaxed") == 0 ]] || fail "the track file flipped without a jump"
"$CG" service-check relaxed --runtime-dir "$RUNTIME" || fail "service-check relaxed failed"

# 2. Workers forked after the scan, one exiting 0 at once (not a death) and one killed at
# once: the kernel tracks them from fork.
for _ in 1 2 3; do
    echo spawn-short >&7
    echo spawn >&7
    sleep 0.05
    kill -KILL "$(cat "$CG_TEST_TMP/worker.pid")"
    last=$(cat "$CG_TEST_TMP/worker.pid")
done
wait_for 10 died "$last" || fail "a worker killed right after fork was not journaled"
sleep 3  # a clean exit would have been journaled within the 2 s grace
clean=$(audit | jq -c --argjson p "$(cat "$CG_TEST_TMP/short.pid")" 'select(.pid == $p)')
[[ -z "$clean" ]] || fail "a worker that exited 0 was journaled: $clean"
service relaxed | jq -e '.clean_exits >= 3 and .deaths >= 4' >/dev/null || fail "counts: $(service relaxed)"

# 3. on_any_death: the track file flips to 1 and service-check fails.
kill -TERM "$strict"
is_fault() { [[ $(service "$1" | jq -r .state) == fault ]]; }
wait_for 10 is_fault strict || fail "strict did not fault: $(service strict)"
[[ $(cat "$CG_TEST_TMP/track/strict") == 1 ]] || fail "the track file of strict is not 1"
[[ $(service strict | jq -r .reason) == died ]] || fail "strict faulted, but not for its death: $(service strict)"
wait_for 10 has_record '.kind == "died" and .verdict == "fault" and .result == "SIGTERM" and .detail.service == "strict"' ||
    fail "no fault record for strict"
if "$CG" service-check strict --runtime-dir "$RUNTIME"; then fail "service-check passed a faulty service"; fi
unknown=$("$CG" service-check nosuch --runtime-dir "$RUNTIME" 2>&1) && fail "service-check of an unknown name passed"
grep -q 'no tracked service "nosuch" (the daemon tracks: relaxed, strict, imap)' <<<"$unknown" ||
    fail "service-check of an unknown name does not say so: $unknown"
metrics=$(curl -sf http://127.0.0.1:19475/metrics) || fail "no /metrics"
"$CG_REPO/target/tools/prometheus/usr/bin/promtool" check metrics <<<"$metrics" || fail "promtool rejects the exposition"
for want in '^clockguard_service_healthy\{service="strict"\} 0$' '^clockguard_service_healthy\{service="relaxed"\} 1$' \
    '^clockguard_service_deaths_total\{service="relaxed",after_time_jump="false"\} [4-9]$'; do
    grep -Eq "$want" <<<"$metrics" || fail "no metric line matching $want: $(grep service <<<"$metrics")"
done
ls -A "$CG_TEST_TMP/track" | grep -v '^\(relaxed\|strict\|imap\)$' && fail "temporary track files left behind"

# 4. The probe: the greeting server stops, the service faults after fall = 2 checks.
kill "$greeter"; wait "$greeter" 2>/dev/null || true
wait_for 10 is_fault imap || fail "imap did not fault: $(service imap)"
record=$(audit | jq -c 'select(.kind == "probe_failed" and .detail.service == "imap")' | head -n 1)
echo "probe: $record"
jq -e '.verdict == "fault" and (.result | test("connect"))' <<<"$record" >/dev/null || fail "wrong probe record: $record"
[[ $(cat "$CG_TEST_TMP/track/imap") == 1 ]] || fail "the track file of imap is not 1"
"$CG" status --runtime-dir "$RUNTIME" | grep -E '^service imap: fault \(probe_failed' ||
    fail "status does not show the fault: $("$CG" status --runtime-dir "$RUNTIME" | tail -n 4)"
status | jq -e '.kernel.service_exit_drops == 0' >/dev/null || fail "exits lost: $(status | jq -c .kernel)"
echo "PASS: deaths (signal, exit 0 ignored, forked after the scan), on_any_death fault, probe fault"
