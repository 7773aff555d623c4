# Read-only adjtimex calls (modes = 0) are counted, not journaled, unless journal_readonly;
# `events --follow` streams records live; `audit --since` filters by time. No clock change.
set -euo pipefail
CG="$CG_BIN_DIR/clockguard"; CALL="$CG_BIN_DIR/cg-clockcall"
STATE="$CG_TEST_TMP/state"; RUNTIME="$CG_TEST_TMP/run"
daemon=""
start() {
    "$CG" run --state-dir "$STATE" --runtime-dir "$RUNTIME" "$@" >>"$CG_TEST_TMP/daemon.log" 2>&1 &
    daemon=$!
    for _ in $(seq 1 100); do "$CG" status --json --runtime-dir "$RUNTIME" >/dev/null 2>&1 && return; sleep 0.1; done
    cat "$CG_TEST_TMP/daemon.log"; exit 1
}
stop() { kill -TERM "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null || true; }
trap 'stop; kill ${follower:-} 2>/dev/null || true' EXIT

start
"$CG" events --follow --json --runtime-dir "$RUNTIME" >"$CG_TEST_TMP/stream" &
follower=$!
sleep 0.5
reads=$("$CALL" adjtimex-read 50 | jq .pid)
invalid=$("$CALL" settime-invalid 3 | jq .pid)
sleep 1
counted=$("$CG" status --json --runtime-dir "$RUNTIME" | jq .kernel.readonly_adjtimex)
[[ "$counted" -ge 50 ]] || { echo "read-only calls counted: $counted, want >= 50"; exit 1; }
n=$("$CG" audit --json --state-dir "$STATE" | jq -c --argjson p "$reads" 'select(.pid == $p)' | wc -l)
[[ "$n" -eq 0 ]] || { echo "read-only calls journaled by default: $n"; exit 1; }
# The live stream got the three invalid calls.
s=$(jq -c --argjson p "$invalid" 'select(.pid == $p)' "$CG_TEST_TMP/stream" | wc -l)
[[ "$s" -eq 3 ]] || { echo "events --follow got $s of 3 records"; cat "$CG_TEST_TMP/stream"; exit 1; }
kill "$follower"; follower=""
# --since: nothing is newer than a minute ahead; everything is newer than an hour ago.
[[ $("$CG" audit --json --state-dir "$STATE" --since "$(date -u -d '+1 min' +%FT%TZ)" | wc -l) -eq 0 ]]
[[ $("$CG" audit --json --state-dir "$STATE" --since 1h | wc -l) -ge 3 ]]
if out=$("$CG" audit --state-dir "$STATE" --since "not a time" 2>&1); then echo "bad --since accepted"; exit 1; fi
[[ "$out" == *"--since"* ]] || { echo "bad --since not named: $out"; exit 1; }
stop

# With journal_readonly = true they are journaled, as kind "read".
# The clock sampler reads the kernel's rate every 100 ms here: 20 of clockguard's own reads
# per summary interval, more than the 8 sent in full, so its own summaries are made too.
cat >"$CG_TEST_TMP/cg.toml" <<TOML
[audit]
journal_readonly = true
[timers]
sample_interval_ms = 100
TOML
start --config "$CG_TEST_TMP/cg.toml"
reads=$("$CALL" adjtimex-read 20 | jq .pid)
# The first 8 of the interval in full, the rest counted in a summary record (within two
# summary intervals, 4 s).
read_counts() {
    "$CG" audit --json --state-dir "$STATE" | jq -s -c --argjson p "$reads" '
        map(select(.pid == $p))
        | [(map(select(.kind == "read")) | length),
           (map(select(.kind == "summary" and .detail.kind == "read") | .detail.count) | add // 0)]'
}
for _ in $(seq 1 100); do
    [[ $(read_counts | jq add) -ge 20 ]] && break; sleep 0.1
done
counts=$(read_counts)
[[ "$counts" == "[8,12]" ]] || { echo "journal_readonly: 20 reads journaled as $counts (in full, summarised), want [8,12]"; exit 1; }
# clockguard's own reads (its clock sampler reads the kernel's rate), in full or in a
# summary, are not.
sleep 4.5
own=$("$CG" audit --json --state-dir "$STATE" | jq -c --argjson p "$daemon" 'select(.pid == $p)' | wc -l)
[[ "$own" -eq 0 ]] || { echo "clockguard journaled $own of its own reads"; exit 1; }
"$CG" status --json --runtime-dir "$RUNTIME" | jq -e '.daemon.own_reads_not_journaled >= 30' >/dev/null \
    || { echo "own reads not counted: $("$CG" status --json --runtime-dir "$RUNTIME" | jq -c .daemon)"; exit 1; }
# A reader that closed its end (`| head -1` once it has its line): the command ends quietly,
# exit status 0 and nothing on stderr (no "failed printing to stdout" panic). The pipe's read
# end is closed before the command starts, so its first write fails with EPIPE.
closed_stdout() {
    python3 -c '
import os, subprocess, sys
r, w = os.pipe()
os.close(r)
p = subprocess.run(sys.argv[1:], stdout=w, stderr=subprocess.PIPE)
print(p.returncode, p.stderr.decode(errors="replace").strip())
' "$@"
}
for args in "status" "status --json" "audit" "audit --json"; do
    # shellcheck disable=SC2086
    case "$args" in audit*) dir=(--state-dir "$STATE") ;; *) dir=(--runtime-dir "$RUNTIME") ;; esac
    got=$(closed_stdout "$CG" $args "${dir[@]}")
    [[ "$got" == "0 " || "$got" == "0" ]] || { echo "clockguard $args into a closed pipe: $got"; exit 1; }
done
# A config typo is refused with its line, and the daemon does not start.
printf '[audit]\njournal_reads = true\n' >"$CG_TEST_TMP/bad.toml"
if out=$("$CG" run --config "$CG_TEST_TMP/bad.toml" --state-dir "$STATE" --runtime-dir "$CG_TEST_TMP/run2" 2>&1); then
    echo "bad config accepted"; exit 1
fi
echo "$out" | grep -q "line 2" || { echo "error does not name the line: $out"; exit 1; }
# --check-config says the same and starts nothing (the package checks before a restart);
# the shipped default is valid.
if out=$("$CG" run --check-config --config "$CG_TEST_TMP/bad.toml" 2>&1); then
    echo "--check-config accepted a bad file: $out"; exit 1
fi
[[ "$out" == *"$CG_TEST_TMP/bad.toml: line 2"*"journal_reads"* ]] || { echo "--check-config said: $out"; exit 1; }
out=$("$CG" run --check-config --config "$CG_REPO/clockguard/clockguard.toml") || { echo "the default is invalid: $out"; exit 1; }
[[ "$out" == *"clockguard.toml: the configuration is valid (mode observe)" ]] || { echo "--check-config said: $out"; exit 1; }
echo ok
