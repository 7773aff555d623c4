# On the host (tracepoints only; the clock is never changed): fentry/LSM show as not
# attached with the kernel's reason, and 2,000 clock_settime(CLOCK_REALTIME) calls with an
# invalid tv_nsec are all in `audit --json` with the caller's pid, exe and EINVAL: the first
# of each summary interval in full, the rest in "summary" records that count them.
set -euo pipefail
CG="$CG_BIN_DIR/clockguard"
STATE="$CG_TEST_TMP/state"; RUNTIME="$CG_TEST_TMP/run"
"$CG" run --state-dir "$STATE" --runtime-dir "$RUNTIME" >"$CG_TEST_TMP/daemon.log" 2>&1 &
daemon=$!
trap 'kill -TERM $daemon 2>/dev/null; wait $daemon 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do "$CG" status --json --runtime-dir "$RUNTIME" >/dev/null 2>&1 && break; sleep 0.1; done
s=$("$CG" status --json --runtime-dir "$RUNTIME")
"$CG" status --runtime-dir "$RUNTIME"
echo "$s" | jq -e '[.hooks[] | select(.kind == "tracepoint") | .attached] | all' >/dev/null || { echo "tracepoints not all attached"; exit 1; }
for h in clock_was_set settime; do
    attached=$(echo "$s" | jq --arg h "$h" '.hooks[] | select(.name == $h) | .attached')
    why=$(echo "$s" | jq -r --arg h "$h" '.hooks[] | select(.name == $h) | .error // ""')
    echo "$h attached=$attached reason=$why"
    if [[ "$attached" == false && -z "$why" ]]; then echo "$h not attached without a reason"; exit 1; fi
done
out=$("$CG_BIN_DIR/cg-clockcall" settime-invalid 2000)
echo "$out"
pid=$(echo "$out" | jq .pid)
exe=$(readlink -f "$CG_BIN_DIR/cg-clockcall")
# Records in full and summary counts, of these very calls.
accounted() {
    "$CG" audit --json --state-dir "$STATE" | jq -s -c --argjson p "$pid" '
        map(select(.pid == $p and .syscall == "clock_settime" and .clock == "CLOCK_REALTIME"
                   and .result == "EINVAL"))
        | [(map(select(.kind == "step" and .requested.nsec == 2000000000)) | length),
           (map(select(.kind == "summary" and .detail.kind == "step") | .detail.count) | add // 0)]'
}
n=0
for _ in $(seq 1 100); do
    counts=$(accounted)
    n=$(echo "$counts" | jq 'add')
    [[ "$n" -ge 2000 ]] && break
    sleep 0.1
done
# Summaries come one to two intervals (2 to 4 s) after the calls; one more interval, so
# that a count too high shows too.
sleep 2.5
counts=$(accounted)
n=$(echo "$counts" | jq 'add')
echo "METRIC host-einval accounted=$n of 2000 (in full, summarised: $counts)"
[[ "$n" -eq 2000 ]] || { echo "$n of 2000 calls accounted for"; exit 1; }
echo "$counts" | jq -e '.[0] >= 8 and .[1] > 0' >/dev/null || { echo "want the first 8 in full and the rest summarised: $counts"; exit 1; }
# The exe: the kernel's exec record (the process has exited by now) or procfs's.
bad=$("$CG" audit --json --state-dir "$STATE" | jq -r --argjson p "$pid" 'select(.pid == $p) | .exe' | sort -u)
[[ "$bad" == "$exe" || "$bad" == "$CG_BIN_DIR/cg-clockcall" ]] || { echo "exe is '$bad', want $exe"; exit 1; }
# Nothing changed the clock: no record claims the clock was set.
"$CG" audit --json --state-dir "$STATE" | jq -e -s 'map(select(.clock_was_set)) | length == 0' >/dev/null
echo ok
