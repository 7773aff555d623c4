# Forward-secure sealing of the journal (issue 18): `audit --setup-keys` writes a sealing
# key and prints the verification key; the daemon seals every seal_interval_s, at every
# rotation and at its stop, evolving the key each time. `audit --verify --verify-key`:
# (d) an intact journal across kill -9, rotations and restarts verifies clean, every record
#     up to the last seal proven;
# (a) root rewriting a suffix with a correctly recomputed hash chain (the daemon itself,
#     restarted on a truncated journal, holds the current key) is caught, and the first
#     rewritten record is named; the chain alone cannot tell;
# (b) a deleted oldest rotated file is a gap with its seq range;
# (c) an edited record is still named.
# The seals also go to the system log (the daemon's log: stderr under systemd).
source "$(dirname "$0")/lib.sh"
need_vm

cat >"$CG_TEST_TMP/sealed.toml" <<EOF
mode = "observe"
[audit]
seal_interval_s = 2
# Small files: the test rotates a few times.
max_journal_bytes = 6000
keep_journals = 3
# Every failed call gets its own record.
repeats_in_full = 0
EOF

out=$("$CG" audit --setup-keys --state-dir "$STATE") || fail "--setup-keys failed: $out"
echo "$out"
KEY=$(echo "$out" | grep -oE '^ +([0-9a-f]{8}-){7}[0-9a-f]{8}$' | tr -d ' ')
[[ -n "$KEY" ]] || fail "no verification key in: $out"
[[ $(stat -c %a "$STATE/seal.key") == 600 ]] || fail "seal.key is mode $(stat -c %a "$STATE/seal.key")"
set +e; again=$("$CG" audit --setup-keys --state-dir "$STATE" 2>&1); rc=$?; set -e
[[ $rc -ne 0 && "$again" == *"--force"* ]] || fail "a second --setup-keys (rc $rc) did not refuse: $again"

# verify_with [ARGS...]: runs `audit --verify` on the test's journal; sets out and rc.
verify_with() {
    set +e
    out=$("$CG" audit --verify --state-dir "$STATE" --runtime-dir "$RUNTIME" "$@" 2>&1)
    rc=$?
    set -e
}

start_daemon --config "$CG_TEST_TMP/sealed.toml"
# A fresh key's first epochs: with 2 s epochs, a slow emulator (7.2 under TCG, once in
# a full run) can answer the first status after the first seal, at epoch 1.
status_json | jq -e '.journal.sealing.epoch <= 2 and (.journal.sealing.key_id | length) == 16' >/dev/null \
    || fail "status does not show the sealing: $(status_json | jq -c .journal)"
# make_records N: N failed clock_settime calls, waits until all N are journaled (by seq:
# rotations drop the oldest records).
make_records() {
    local after
    after=$(status_json | jq .journal.head_seq)
    "$CALL" settime-invalid "$1" >/dev/null
    wait_records "$1" ".comm == \"cg-clockcall\" and .result == \"EINVAL\" and .seq > $after"
}
make_records 12
# Two interval seals at 2 s.
for _ in $(seq 1 100); do
    [[ $(status_json | jq .journal.sealing.epoch) -ge 2 ]] && break
    sleep 0.1
done
status_json | jq -e '.journal.sealing.epoch >= 2' >/dev/null || fail "no interval seals: $(status_json | jq -c .journal)"
audit_json | jq -e -s 'all(.epoch != null and (.mac | length) == 64)' >/dev/null || fail "a record without epoch and MAC"

# A crash: the records since the last seal are unsealed until the next one.
kill -9 "$DAEMON_PID"
wait "$DAEMON_PID" 2>/dev/null || true
DAEMON_PID=""
start_daemon --config "$CG_TEST_TMP/sealed.toml"
make_records 12
grep -q "journal sealed: epoch" "$CG_TEST_TMP/daemon.log" || fail "no seal in the daemon's log"
stop_daemon

# (d) Intact: every record is sealed, the stop's seal last.
files=$(ls "$STATE"/journal.jsonl* | wc -l)
[[ $files -ge 3 ]] || fail "expected rotations, found $files journal files"
audit_json | jq -e -s '[.[] | select(.kind == "seal" and .detail.reason == "rotation")] | length >= 1' >/dev/null \
    || fail "no rotation seal"
last_seq=$(audit_json | jq -s '.[-1].seq')
verify_with --verify-key "$KEY"
echo "$out"
[[ $rc -eq 0 && "$out" == *"every record up to seq $last_seq "*"0 record(s) after it"* ]] \
    || fail "an intact sealed journal (rc $rc, last seq $last_seq): $out"
verify_with --verify-key "$(echo "$KEY" | tr 0-9a-f 1-9a-f0)"
[[ $rc -eq 2 && "$out" == *"is it this journal's verification key"* ]] || fail "another key (rc $rc): $out"

backup="$CG_TEST_TMP/backup"
mkdir -p "$backup"
cp -a "$STATE"/journal.jsonl* "$backup/"

# (b) The oldest rotated file deleted: a gap with its seq range.
oldest=$(ls "$STATE"/journal.jsonl.* | sort -t. -k3 -n | tail -1)
first=$(awk 'NR == 1' "$oldest" | jq .seq)
rm "$oldest"
verify_with
[[ $rc -eq 2 && "$out" == *"records seq $first to "*"are missing"*"deleted"* ]] || fail "deleted $oldest (from seq $first), rc $rc: $out"
cp -a "$backup"/journal.jsonl* "$STATE/"

# (c) An edited record is named.
# (awk, not `| head`: under pipefail a writer cut short by head fails the test.)
edited=$(grep -l '"comm":"cg-clockcall"' "$STATE"/journal.jsonl* | awk 'NR == 1')
line=$(awk '/"comm":"cg-clockcall"/ { print NR; exit }' "$edited")
sed -i "${line}s/\"comm\":\"cg-clockcall\"/\"comm\":\"innocent\"/" "$edited"
verify_with --verify-key "$KEY"
[[ $rc -eq 2 && "$out" == *"$edited:$line: record seq"*"was edited"* ]] || fail "edited $edited:$line, rc $rc: $out"
cp -a "$backup"/journal.jsonl* "$STATE/"

# (a) Root rewrites everything after the current file's first record with a correct chain:
# the daemon, restarted on the truncated file, holds the evolved key and MACs it all anew.
# The current file ends with the stop's record and its seal (or a rotation's seal first).
[[ $(wc -l <"$STATE/journal.jsonl") -ge 2 ]] || fail "the current file: $(cat "$STATE/journal.jsonl")"
kept=$(awk 'NR == 1' "$STATE/journal.jsonl")
first_rewritten=$(( $(echo "$kept" | jq .seq) + 1 ))
echo "$kept" >"$STATE/journal.jsonl"
start_daemon --config "$CG_TEST_TMP/sealed.toml"
make_records 3
stop_daemon
verify_with
[[ $rc -eq 0 ]] || fail "the rewritten chain should pass without the key (rc $rc): $out"
verify_with --verify-key "$KEY"
first_fail=$(echo "$out" | awk '/^FAIL/ { print; exit }')
echo "$first_fail"
[[ $rc -eq 2 && "$first_fail" == *"record seq $first_rewritten was rewritten"* ]] \
    || fail "the rewrite from seq $first_rewritten (rc $rc): $out"
echo "PASS: sealed journal: intact across kill -9 and $((files - 1)) rotation(s); rewrite, gap and edit named"
