# NTP in observe mode (like chronyd -x): against a reference server on loopback that is 11 s
# ahead, clockguard measures the offset (-11 s: the clock is behind) and reports it in
# `tracking` and `sources`, but never touches this machine's clock (no slew engine, no
# frequency set). Its own server answers on loopback and says how far it is off. The error
# bound it publishes (ClockBound's segment, read through ClockBound's own client crate)
# holds the reference's time; a second daemon on the same segment and one whose segment
# directory cannot be made say why and run on. Then a server without sources: with
# local_stratum it serves at that stratum (chrony's `local`), so an isolated cluster keeps
# one time.
set -euo pipefail
CG="$CG_BIN_DIR/clockguard"
REF="$CG_BIN_DIR/cg-ntpref"
STATE="$CG_TEST_TMP/state"; RUNTIME="$CG_TEST_TMP/run"
PARAMS="$CG_TEST_TMP/ref.json"
"$REF" serve --listen 127.0.0.1:0 --params "$PARAMS" --offset-s 11 >"$CG_TEST_TMP/ref.log" 2>&1 &
ref=$!
daemon=""
trap 'kill "$ref" 2>/dev/null; [[ -n "$daemon" ]] && { kill -TERM "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null; }; true' EXIT
for _ in $(seq 1 100); do [[ -s "$PARAMS" ]] && break; sleep 0.1; done
listen=$(jq -r .listen "$PARAMS")
SEGMENT="$CG_TEST_TMP/clockbound/shm0"
cat >"$CG_TEST_TMP/ntp.toml" <<EOF2
mode = "observe"
[ntp]
servers = ["$listen"]
serve = "127.0.0.1:0"
[bound]
path = "$SEGMENT"
EOF2
"$CG" run --config "$CG_TEST_TMP/ntp.toml" --state-dir "$STATE" --runtime-dir "$RUNTIME" >"$CG_TEST_TMP/daemon.log" 2>&1 &
daemon=$!
t=""
for _ in $(seq 1 200); do
    t=$("$CG" tracking --json --runtime-dir "$RUNTIME" 2>/dev/null || true)
    [[ "$(echo "$t" | jq -r '.synchronized // false' 2>/dev/null)" == true ]] && break
    sleep 0.1
done
"$CG" tracking --runtime-dir "$RUNTIME"
"$CG" sources --runtime-dir "$RUNTIME"
echo "$t" | jq -e '.synchronized == true and .disciplining == false and .slew == null and .frequency_ppm == null' >/dev/null \
    || { echo "observe mode: $t"; exit 1; }
# The offset as the reference itself sees it (CLOCK_REALTIME - ref), and as clockguard does.
truth=$("$REF" offset --params "$PARAMS" | jq .offset_ns)
measured=$(echo "$t" | jq '.offset_s * 1e9 | round')
d=$(( measured - truth )); d=${d#-}
[[ "$d" -lt 5000000 ]] || { echo "measured $measured ns, reference says $truth ns"; exit 1; }
echo "METRIC ntp-observe measured_ns=$measured truth_ns=$truth"
# Against the reference's own figure, not its nominal 11 s: whatever else moves this
# machine's clock (a hypervisor's time sync) moves both.
"$CG" sources --json --runtime-dir "$RUNTIME" | jq -e --argjson truth "$truth" '.sources[0].state == "selected" and .sources[0].stratum == 1 and (.sources[0].offset_s * 1e9 + $truth | fabs) < 5e6' >/dev/null \
    || { echo "sources: $("$CG" sources --json --runtime-dir "$RUNTIME")"; exit 1; }
grep -q "NTP: measuring only" "$CG_TEST_TMP/daemon.log" || { echo "not said in the log"; exit 1; }
"$CG" status --json --runtime-dir "$RUNTIME" | jq -e '.ntp.running == true and .ntp.disciplining == false' >/dev/null \
    || { echo "status: $("$CG" status --json --runtime-dir "$RUNTIME" | jq -c .ntp)"; exit 1; }
# The server (on the ephemeral port it bound) answers with this machine's clock and says
# it is 11 s from its source: root dispersion >= 11 s, so no client would select it.
served=$("$CG" tracking --json --runtime-dir "$RUNTIME" | jq -r .server.listen)
[[ "$served" =~ ^127\.0\.0\.1:[0-9]+$ && "$served" != 127.0.0.1:0 ]] || { echo "server listen: $served"; exit 1; }
q=$("$REF" query "$served" --count 1)
echo "query: $q"
echo "$q" | jq -e '.stratum == 2 and (.offset_ns | fabs) < 5000000' >/dev/null || { echo "served: $q"; exit 1; }

# The error bound: synchronised, at least the 11 s the clock is off (observe mode corrects
# nothing), growing at the kernel's 500 ppm (anyone may slew the clock: no guard), and
# published where ClockBound's client reads it.
"$CG" now --runtime-dir "$RUNTIME"
now=$("$CG" now --json --runtime-dir "$RUNTIME")
echo "$now" | jq -e --arg seg "$SEGMENT" --argjson truth "$truth" '.status == "synchronized"
    and .bound_ns >= ($truth | fabs) - 5e6 and .bound_ns < ($truth | fabs) + 1e8 and .why.drift_floor_ppb == 500000 and .segment == $seg
    and .segment_error == null and .segment_writes >= 2
    and (.latest_ns - .earliest_ns - 2 * .bound_ns | fabs) < 1000' >/dev/null \
    || { echo "now: $now"; exit 1; }
"$CG" status --json --runtime-dir "$RUNTIME" | jq -e '.bound.status == "synchronized"' >/dev/null \
    || { echo "status has no bound: $("$CG" status --json --runtime-dir "$RUNTIME" | jq -c .bound)"; exit 1; }
"$REF" bound --params "$PARAMS" --segment "$SEGMENT" --stopfile "$CG_TEST_TMP/bound.stop" \
    --interval-ms 1 >"$CG_TEST_TMP/bound.json" &
reader=$!
sleep 3
touch "$CG_TEST_TMP/bound.stop"
wait "$reader" || { echo "the ClockBound reader failed: $(cat "$CG_TEST_TMP/bound.json")"; exit 1; }
jq -c . "$CG_TEST_TMP/bound.json"
jq -e '.samples > 1000 and .outside == 0 and .by_status.synchronized.samples == .samples' \
    "$CG_TEST_TMP/bound.json" >/dev/null || { echo "bound: $(cat "$CG_TEST_TMP/bound.json")"; exit 1; }
echo "METRIC bound-observe-host $(jq -r '"samples=\(.samples) outside=\(.outside) bound_p50_ns=\(.by_status.synchronized.bound_p50_ns)"' "$CG_TEST_TMP/bound.json")"
# A second daemon on the same segment, and one whose segment directory cannot be made:
# each says why (log and `now`) and runs on.
for case in owned unmakeable; do
    path="$SEGMENT"; [[ "$case" == unmakeable ]] && path="/proc/clockguard-test/shm0"
    cat >"$CG_TEST_TMP/$case.toml" <<EOF2
mode = "observe"
[audit]
fallback_detector = false
[ntp]
servers = ["$listen"]
[bound]
path = "$path"
EOF2
    "$CG" run --config "$CG_TEST_TMP/$case.toml" --state-dir "$CG_TEST_TMP/$case-state" \
        --runtime-dir "$CG_TEST_TMP/$case-run" >"$CG_TEST_TMP/$case.log" 2>&1 &
    other=$!
    answer=""
    for _ in $(seq 1 100); do
        answer=$("$CG" now --json --runtime-dir "$CG_TEST_TMP/$case-run" 2>/dev/null || true)
        [[ -n "$answer" ]] && break
        sleep 0.1
    done
    kill -0 "$other" || { echo "$case: the daemon died: $(cat "$CG_TEST_TMP/$case.log")"; exit 1; }
    kill -TERM "$other"; wait "$other" || true
    echo "$case: $(echo "$answer" | jq -c '{segment, segment_error}')"
    case "$case" in
        owned) want="another process holds its lock" ;;
        unmakeable) want="cannot create its directory /proc/clockguard-test" ;;
    esac
    echo "$answer" | jq -e --arg want "$want" '.segment_error | contains($want)' >/dev/null \
        || { echo "$case: $answer"; exit 1; }
    grep -q "cannot write the ClockBound segment $path: $want" "$CG_TEST_TMP/$case.log" \
        || { echo "$case: not said in the log: $(grep -i bound "$CG_TEST_TMP/$case.log")"; exit 1; }
done

kill -TERM "$daemon"; wait "$daemon" || true
cat >"$CG_TEST_TMP/local.toml" <<EOF2
mode = "observe"
[ntp]
serve = "127.0.0.1:0"
local_stratum = 10
EOF2
"$CG" run --config "$CG_TEST_TMP/local.toml" --state-dir "$STATE" --runtime-dir "$RUNTIME" >"$CG_TEST_TMP/daemon2.log" 2>&1 &
daemon=$!
served=""
for _ in $(seq 1 100); do
    served=$("$CG" tracking --json --runtime-dir "$RUNTIME" 2>/dev/null | jq -r '.server.listen // empty' || true)
    [[ -n "$served" ]] && break
    sleep 0.1
done
q=$("$REF" query "$served" --count 1) || { echo "local stratum server: $q"; exit 1; }
echo "local stratum: $q"
echo "$q" | jq -e '.stratum == 10 and .refid == "LOCL" and (.offset_ns | fabs) < 5000000' >/dev/null || { echo "local stratum: $q"; exit 1; }
echo ok
