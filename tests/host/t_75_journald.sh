# Each audit record as a structured entry of the systemd journal (journald's native
# protocol), received by a stand-in journald (this machine has none): a datagram socket
# that parses the protocol as journald does (NAME=value lines, length-prefixed values,
# an entry passed as a sealed memfd) and writes each entry as JSON. Every record of
# clockguard's own journal arrives once, with its seq, hash, kind and verdict as fields,
# the whole record in CLOCKGUARD_RECORD, a one-line MESSAGE and the MESSAGE_ID of its
# kind. Then journald goes away: clockguard goes on journaling, counts what it could not
# send, and says so once.
set -euo pipefail
CG="$CG_BIN_DIR/clockguard"
STATE="$CG_TEST_TMP/state"; RUNTIME="$CG_TEST_TMP/run"
SOCK="$CG_TEST_TMP/journal.sock"; ENTRIES="$CG_TEST_TMP/entries.jsonl"
fail() { echo "FAIL: $*"; tail -n 20 "$CG_TEST_TMP/daemon.log"; exit 1; }

python3 -u - "$SOCK" "$ENTRIES" <<'PY' &
import array, json, os, socket, struct, sys
path, out = sys.argv[1], open(sys.argv[2], "a")
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
def parse(data):
    fields, i = {}, 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1); i = nl + 1
        else:
            k = line; (n,) = struct.unpack("<Q", data[nl + 1:nl + 9])
            v = data[nl + 9:nl + 9 + n]; i = nl + 9 + n
            assert data[i:i + 1] == b"\n", "no newline after a binary field"; i += 1
        fields[k.decode()] = v.decode()
    return fields
while True:
    fds = array.array("i")
    data, anc, _, _ = s.recvmsg(1 << 20, socket.CMSG_LEN(4))
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:4])
    if fds:
        data = os.pread(fds[0], 1 << 24, 0); os.close(fds[0])
        out.write(json.dumps({"via_memfd": True, **parse(data)}) + "\n")
    else:
        out.write(json.dumps(parse(data)) + "\n")
    out.flush()
PY
journald=$!
trap 'kill $journald 2>/dev/null || true; kill -TERM $daemon 2>/dev/null || true; wait $daemon 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do [[ -S "$SOCK" ]] && break; sleep 0.1; done

cat >"$CG_TEST_TMP/cg.toml" <<EOF2
[audit]
journald_socket = "$SOCK"
EOF2
"$CG" run --config "$CG_TEST_TMP/cg.toml" --state-dir "$STATE" --runtime-dir "$RUNTIME" \
    >"$CG_TEST_TMP/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 1 100); do "$CG" status --json --runtime-dir "$RUNTIME" >/dev/null 2>&1 && break; sleep 0.1; done
grep -q "journald: each record also goes to $SOCK" "$CG_TEST_TMP/daemon.log" || fail "journald not in use"

# Records: the daemon's start, invalid clock_settime calls (EINVAL: the clock never moves).
"$CG_BIN_DIR/cg-clockcall" settime-invalid 3 >/dev/null
for _ in $(seq 1 100); do
    [[ $("$CG" audit --json --state-dir "$STATE" | wc -l) -ge 4 && -s "$ENTRIES" &&
        $(wc -l <"$ENTRIES") -ge $("$CG" audit --json --state-dir "$STATE" | wc -l) ]] && break
    sleep 0.1
done
"$CG" audit --json --state-dir "$STATE" >"$CG_TEST_TMP/records.jsonl"
echo "records: $(wc -l <"$CG_TEST_TMP/records.jsonl"), entries: $(wc -l <"$ENTRIES")"
head -c 1500 "$ENTRIES" | head -n 1 | jq -c 'del(.CLOCKGUARD_RECORD)'
# Each record once, as its entry says it; the MESSAGE_ID is its kind's.
while read -r record; do
    seq=$(jq .seq <<<"$record")
    entry=$(jq -c --arg seq "$seq" 'select(.CLOCKGUARD_SEQ == $seq)' "$ENTRIES")
    [[ $(grep -c . <<<"$entry") == 1 ]] || fail "record $seq arrived $(grep -c . <<<"$entry") times"
    want_id=$(printf 'clockguard:%s:%s' "$(jq -r .source <<<"$record")" "$(jq -r .kind <<<"$record")" |
        sha256sum | cut -c1-32)
    jq -e --argjson r "$record" --arg id "$want_id" '
        .CLOCKGUARD_HASH == $r.hash and .CLOCKGUARD_KIND == $r.kind
        and .CLOCKGUARD_VERDICT == $r.verdict and .CLOCKGUARD_SOURCE == $r.source
        and (.CLOCKGUARD_RECORD | fromjson) == $r and .MESSAGE_ID == $id
        and .SYSLOG_IDENTIFIER == "clockguard" and (.MESSAGE | length > 0)
        and (.MESSAGE | contains("\n") | not) and (.PRIORITY | test("^[0-7]$"))
        and (if $r.pid then .CLOCKGUARD_PID == ($r.pid | tostring) else true end)' \
        <<<"$entry" >/dev/null || fail "entry of record $seq does not carry it: $entry"
done <"$CG_TEST_TMP/records.jsonl"
jq -r 'select(.CLOCKGUARD_KIND == "step") | .MESSAGE' "$ENTRIES" | head -n 1
jq -e -s 'map(select(.CLOCKGUARD_KIND == "step" and .CLOCKGUARD_RESULT == "EINVAL"
    and .CLOCKGUARD_SYSCALL == "clock_settime" and (.MESSAGE | test("by cg-clockcall\\[[0-9]+\\]")))) | length >= 3' \
    "$ENTRIES" >/dev/null || fail "the EINVAL steps are not there with who made them"
sent=$("$CG" status --json --runtime-dir "$RUNTIME" | jq .daemon.journald_entries)
[[ $sent -ge $(wc -l <"$CG_TEST_TMP/records.jsonl") ]] || fail "status counts $sent entries sent"

# journald goes away: records go on into clockguard's journal, the loss is counted.
kill "$journald"; wait "$journald" 2>/dev/null || true
before=$(wc -l <"$CG_TEST_TMP/records.jsonl")
"$CG_BIN_DIR/cg-clockcall" settime-invalid 2 >/dev/null
for _ in $(seq 1 100); do
    [[ $("$CG" audit --json --state-dir "$STATE" | wc -l) -ge $((before + 2)) ]] && break
    sleep 0.1
done
[[ $("$CG" audit --json --state-dir "$STATE" | wc -l) -ge $((before + 2)) ]] || fail "records stopped without journald"
dropped=$("$CG" status --json --runtime-dir "$RUNTIME" | jq .daemon.journald_dropped)
[[ $dropped -ge 2 ]] || fail "status counts $dropped entries not taken"
[[ $(grep -c "journald: record .* not sent" "$CG_TEST_TMP/daemon.log") == 1 ]] ||
    fail "the failure is not said exactly once: $(grep -c "journald: record" "$CG_TEST_TMP/daemon.log")"
"$CG" audit --verify --state-dir "$STATE" --runtime-dir "$RUNTIME" >/dev/null || fail "the hash chain broke"
"$CG" status --runtime-dir "$RUNTIME" | grep "systemd journal"
kill -0 "$daemon" || fail "the daemon died"
echo "PASS: $sent entries, each its record's; $dropped counted once journald was gone"
