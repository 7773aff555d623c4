# Operations and security on the host (no clock change):
# - systemd: READY=1, WATCHDOG=1 pings from the event loop, RELOADING=1/READY=1 around a
#   reload, STOPPING=1 on SIGTERM (a datagram socket stands in for systemd); the unit file
#   passes `systemd-analyze verify`.
# - Reload (`clockguard reload` and SIGHUP): a new guard policy takes effect and is listed
#   as applied, other changes as needing a restart; an invalid file is refused with its
#   line and the configuration in use is kept; each reload is journaled with who asked.
# - Nothing listens on the network by default. The control socket: 0600 and root only;
#   the peer's credentials are checked past the file mode; with `[control] read_group`,
#   0660, and the group (primary or supplementary, SO_PEERGROUPS) may read, never reload.
#   10,000 idle connections of a reader are turned away or timed out, and root's status
#   is answered throughout.
# - The hash chain: `audit --verify` passes, then names a hand-edited record, and finds
#   the last record removed by comparing with the daemon's head.
set -euo pipefail
CG="$CG_BIN_DIR/clockguard"
STATE="$CG_TEST_TMP/state"; RUNTIME="$CG_TEST_TMP/run"
# Other users must reach the socket through the test's directory (mktemp makes it 0700).
chmod 755 "$CG_TEST_TMP"
fail() { echo "FAIL: $*"; tail -n 30 "$CG_TEST_TMP/daemon.log"; exit 1; }
as_user() { setpriv --reuid="$1" --regid="$2" --groups="$3" -- "${@:4}"; }

# The unit file, with ExecStart pointing at the binary under test.
sed "s|/usr/sbin/clockguard|$CG|" packaging/clockguard.service >"$CG_TEST_TMP/clockguard.service"
systemd-analyze verify --man=no "$CG_TEST_TMP/clockguard.service" >"$CG_TEST_TMP/verify.log" 2>&1 \
    || { cat "$CG_TEST_TMP/verify.log"; fail "systemd-analyze verify refused the unit file"; }
grep -q "clockguard.service" "$CG_TEST_TMP/verify.log" && { cat "$CG_TEST_TMP/verify.log"; fail "systemd-analyze warned about the unit"; }

# systemd's side of sd_notify: every datagram, one line each (multi-line messages joined by |).
NOTIFY="$CG_TEST_TMP/notify.sock"
python3 -u -c "
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1])
while True:
    print(s.recv(4096).decode().strip().replace('\n', '|'), flush=True)
" "$NOTIFY" >"$CG_TEST_TMP/notify.log" &
listener=$!
for _ in $(seq 1 50); do [[ -S "$NOTIFY" ]] && break; sleep 0.1; done

CONF="$CG_TEST_TMP/clockguard.toml"
write_config() {
    cat >"$CONF" <<EOF
mode = "observe"
[guard]
allow = [$1]
[ntp]
minpoll = $2
EOF
}
write_config '"/usr/bin/true"' 4
start_daemon() {
    NOTIFY_SOCKET="$NOTIFY" WATCHDOG_USEC=400000 "$CG" run --config "$CONF" \
        --state-dir "$STATE" --runtime-dir "$RUNTIME" >>"$CG_TEST_TMP/daemon.log" 2>&1 &
    daemon=$!
    for _ in $(seq 1 100); do "$CG" status --json --runtime-dir "$RUNTIME" >/dev/null 2>&1 && break; sleep 0.1; done
}
start_daemon
trap 'kill -TERM $daemon $listener 2>/dev/null; wait $daemon 2>/dev/null || true' EXIT
sleep 1.5
grep -qx "READY=1" "$CG_TEST_TMP/notify.log" || fail "no READY=1: $(cat "$CG_TEST_TMP/notify.log")"
pings=$(grep -cx "WATCHDOG=1" "$CG_TEST_TMP/notify.log" || true)
echo "METRIC watchdog-pings-in-1.5s $pings"
# WATCHDOG_USEC 400 ms → a ping every 200 ms.
[[ "$pings" -ge 4 ]] || fail "only $pings watchdog pings in 1.5 s"

# Nothing listens on the network unless configured (no NTP server, no metrics here).
listening=$(ss -H -lntup 2>/dev/null | grep "pid=$daemon," || true)
[[ -z "$listening" ]] || fail "the daemon listens on the network: $listening"

policy() { "$CG" status --json --runtime-dir "$RUNTIME" | jq -c '[.enforcement.policy[] | select(.class == "allow") | .path] | sort'; }
[[ "$(policy)" == '["/usr/bin/true"]' ]] || fail "policy at start: $(policy)"

# 1. A valid change: the allow list applies at once, minpoll waits for a restart.
write_config '"/usr/bin/true", "/usr/bin/false"' 5
out=$("$CG" reload --runtime-dir "$RUNTIME") || fail "reload refused: $out"
echo "$out"
[[ "$out" == *"applied guard.allow;"* && "$out" == *"restart: ntp.minpoll"* ]] || fail "reload said: $out"
[[ "$(policy)" == '["/usr/bin/false","/usr/bin/true"]' ]] || fail "policy after reload: $(policy)"
grep -q "RELOADING=1|MONOTONIC_USEC=" "$CG_TEST_TMP/notify.log" || fail "no RELOADING=1 to systemd"
[[ "$(grep -cx "READY=1" "$CG_TEST_TMP/notify.log")" -ge 2 ]] || fail "no READY=1 after the reload"

# 2. An invalid file: refused with its line, the policy in use kept; by SIGHUP too.
write_config '"/usr/bin/false"' 4
echo 'maxpol = 9' >>"$CONF"
if out=$("$CG" reload --runtime-dir "$RUNTIME" 2>&1); then fail "an invalid file was accepted: $out"; fi
echo "$out"
[[ "$out" == *"line 6"* && "$out" == *"maxpol"* && "$out" == *"in use is kept"* ]] || fail "the refusal does not name the key and line: $out"
[[ "$(policy)" == '["/usr/bin/false","/usr/bin/true"]' ]] || fail "policy changed by an invalid file: $(policy)"
kill -HUP "$daemon"
for _ in $(seq 1 50); do
    grep -q "reload: .*line 6.*maxpol.*in use is kept" "$CG_TEST_TMP/daemon.log" && break
    sleep 0.1
done
kill -0 "$daemon" || fail "SIGHUP with an invalid file stopped the daemon"
grep -q "reload: .*line 6.*maxpol.*in use is kept" "$CG_TEST_TMP/daemon.log" || fail "SIGHUP's refusal is not logged with the line"
# ... and a valid file by SIGHUP.
write_config '"/usr/bin/false"' 4
kill -HUP "$daemon"
for _ in $(seq 1 50); do [[ "$(policy)" == '["/usr/bin/false"]' ]] && break; sleep 0.1; done
[[ "$(policy)" == '["/usr/bin/false"]' ]] || fail "policy after SIGHUP: $(policy)"

# Each reload is in the journal, with the requester when it came through the socket.
"$CG" audit --json --state-dir "$STATE" | jq -s -e '
    [.[] | select(.source == "daemon" and .kind == "reload")] as $r
    | ($r | length) == 4
    and ($r[0].comm == "clockguard" and ($r[0].pid | type) == "number" and $r[0].detail.applied == ["guard.allow"])
    and ($r[1].result == "EINVAL" and ($r[1].detail.error | test("line 6")))
    and ($r[2].pid == null and $r[2].result == "EINVAL")
    and ($r[3].result == "0")' >/dev/null || fail "reload records: $("$CG" audit --json --state-dir "$STATE" | jq -c 'select(.source == "daemon")')"

# 3. The control socket: root only by default.
[[ "$(stat -c '%a %U' "$RUNTIME/control.sock")" == "600 root" ]] || fail "socket is $(stat -c '%a %U' "$RUNTIME/control.sock")"
if out=$(as_user 65534 65534 65534 "$CG" status --runtime-dir "$RUNTIME" 2>&1); then fail "nobody read the status: $out"; fi
echo "nobody, default socket: $out"
[[ "$out" == *"permission denied on $RUNTIME/control.sock"* ]] || fail "nobody was refused without saying why: $out"
# Past the file mode (a socket opened up by hand), the peer's credentials still decide.
chmod 666 "$RUNTIME/control.sock"
if out=$(as_user 65534 65534 65534 "$CG" status --runtime-dir "$RUNTIME" 2>&1); then fail "nobody read the status through a 0666 socket: $out"; fi
echo "nobody, socket made 0666: $out"
[[ "$out" == *"permission denied: uid 65534 is not root"* ]] || fail "SO_PEERCRED did not refuse nobody: $out"
chmod 600 "$RUNTIME/control.sock"

# 4. The hash chain, checked against the running daemon's head.
"$CG_BIN_DIR/cg-clockcall" settime-invalid 20 >/dev/null
for _ in $(seq 1 100); do
    # The first 8 in full, the rest in a summary record (within 4 s).
    [[ "$("$CG" audit --json --state-dir "$STATE" | jq -s 'map(select(.result == "EINVAL" and .syscall == "clock_settime") | if .kind == "summary" then .detail.count else 1 end) | add // 0')" -ge 20 ]] && break
    sleep 0.1
done
out=$("$CG" audit --verify --state-dir "$STATE" --runtime-dir "$RUNTIME") || fail "verify failed on an untouched journal: $out"
echo "$out"
[[ "$out" == *"the hash chain is intact"* && "$out" == *"ends at the daemon's head"* ]] || fail "verify said: $out"
JOURNAL="$STATE/journal.jsonl"
cp "$JOURNAL" "$CG_TEST_TMP/journal.orig"
# An operator "corrects" who made a change: the first call of cg-clockcall (which line
# that is depends on what else the daemon journaled, e.g. this machine's own clock steps).
line=$(grep -n -m1 '"comm":"cg-clockcall"' "$JOURNAL" | cut -d: -f1 || true)
[[ -n "$line" ]] || fail "no cg-clockcall record to edit in $JOURNAL"
sed -i "${line}s/\"comm\":\"cg-clockcall\"/\"comm\":\"chronyd\"/" "$JOURNAL"
cmp -s "$JOURNAL" "$CG_TEST_TMP/journal.orig" && fail "the edit of line $line changed nothing"
set +e; out=$("$CG" audit --verify --state-dir "$STATE" --runtime-dir "$RUNTIME"); rc=$?; set -e
echo "$out"
[[ $rc -eq 2 && "$out" == *"journal.jsonl:$line: record seq"*"was edited"* ]] || fail "verify (rc $rc) did not name the edited line $line: $out"
# The last record removed: the chain is intact, the daemon's head is not there.
head -n -1 "$CG_TEST_TMP/journal.orig" >"$JOURNAL"
set +e; out=$("$CG" audit --verify --state-dir "$STATE" --runtime-dir "$RUNTIME"); rc=$?; set -e
echo "$out"
[[ $rc -eq 2 && "$out" == *"the last records were removed"* ]] || fail "verify (rc $rc) missed the removed last record: $out"
cp "$CG_TEST_TMP/journal.orig" "$JOURNAL"

# 5. SIGTERM: STOPPING=1, then a clean exit.
kill -TERM "$daemon"
wait "$daemon" || fail "the daemon exited with status $? on SIGTERM"
grep -qx "STOPPING=1" "$CG_TEST_TMP/notify.log" || fail "no STOPPING=1"

# 6. A read group: members (primary or supplementary group) read, never reload.
cat >>"$CONF" <<EOF
[control]
read_group = "nogroup"
EOF
start_daemon
[[ "$(stat -c '%a %G' "$RUNTIME/control.sock")" == "660 nogroup" ]] || fail "socket is $(stat -c '%a %G' "$RUNTIME/control.sock")"
as_user 65534 65534 65534 "$CG" status --runtime-dir "$RUNTIME" >/dev/null || fail "nobody (group nogroup) cannot read the status"
as_user 65533 65533 65534 "$CG" status --runtime-dir "$RUNTIME" >/dev/null || fail "a supplementary member of nogroup cannot read the status"
if out=$(as_user 65534 65534 65534 "$CG" reload --runtime-dir "$RUNTIME" 2>&1); then fail "nobody reloaded: $out"; fi
echo "nobody, reload: $out"
[[ "$out" == *"permission denied"*"reload"*"needs root"* ]] || fail "the reload refusal does not say why: $out"
if out=$(as_user 65533 65533 65533 "$CG" status --runtime-dir "$RUNTIME" 2>&1); then fail "a non-member read the status: $out"; fi
echo "non-member: $out"
grep -q "control socket: refused pid [0-9]* (uid 65534): permission denied" "$CG_TEST_TMP/daemon.log" || fail "the refused reload is not logged"

# 7. A flood: nobody (in the read group) opens 10,000 connections that send nothing. The
# daemon answers those over its budget "too many" and closes them at once, closes the
# silent ones it took after its request timeout (5 s), and root's status is answered
# all along (its connections have their own budget).
ulimit -n 10200
mkdir "$CG_TEST_TMP/flood" && chown 65534:65534 "$CG_TEST_TMP/flood"
ready="$CG_TEST_TMP/flood/ready"
as_user 65534 65534 65534 "$CG_BIN_DIR/cg-clockcall" hold-connections "$RUNTIME/control.sock" 10000 8 "$ready" \
    >"$CG_TEST_TMP/flood.json" &
holder=$!
for _ in $(seq 1 300); do [[ -e "$ready" ]] && break; sleep 0.1; done
[[ -e "$ready" ]] || fail "the flood did not connect within 30 s"
worst_ms=0
for _ in 1 2 3 4 5; do
    started=$(date +%s%N)
    "$CG" status --runtime-dir "$RUNTIME" >/dev/null || fail "root's status went unanswered during the flood"
    took_ms=$(( ($(date +%s%N) - started) / 1000000 ))
    (( took_ms > worst_ms )) && worst_ms=$took_ms
    sleep 1
done
echo "METRIC control_status_during_flood_worst_ms $worst_ms"
wait "$holder" || fail "the flood's holder failed: $(cat "$CG_TEST_TMP/flood.json")"
flood=$(cat "$CG_TEST_TMP/flood.json")
echo "flood: $flood"
echo "$flood" | jq -e '.connected == 10000 and .too_many >= 9900 and .timed_out >= 1 and .too_many + .timed_out == 10000' >/dev/null \
    || fail "the flood was not turned away and timed out as expected: $flood"
grep -q "connection(s) refused as too many" "$CG_TEST_TMP/daemon.log" || fail "the refused flood is not logged"
"$CG" status --runtime-dir "$RUNTIME" >/dev/null || fail "no status after the flood"
echo ok
