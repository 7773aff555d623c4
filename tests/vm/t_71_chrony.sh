# chrony interoperability, with Debian's chronyd 4.3 (unpacked by `cargo xtask setup`, run
# with -x so that it never touches the clock: it then keeps its notion of the time in
# software). The chain: cg-ntpref (0.5 s ahead of the VM's clock) → chronyd as a server →
# clockguard in guard mode, which selects chronyd and slews the clock to the reference's
# time. A server on the same machine cannot be its own clock's reference, hence the
# upstream. Then `chronyd -Q` as a client accepts clockguard's server and measures an
# offset under 1 ms.
source "$(dirname "$0")/lib.sh"
need_vm

CHRONYD="$CG_REPO/target/tools/chrony/usr/sbin/chronyd"
[[ -x "$CHRONYD" ]] || fail "no $CHRONYD: run cargo xtask setup"
PARAMS="$CG_TEST_TMP/ref.json"
start_reference "$PARAMS" "$CG_TEST_TMP/ref.log" --listen 127.0.0.1:12300 --offset-s 0.5
ref_pid=$REF_PID
cat >"$CG_TEST_TMP/chrony-server.conf" <<EOF2
server 127.0.0.1 port 12300 iburst minpoll 0 maxpoll 0
port 12302
cmdport 0
allow 127.0.0.1
pidfile $CG_TEST_TMP/chronyd-server.pid
EOF2
"$CHRONYD" -x -d -u root -f "$CG_TEST_TMP/chrony-server.conf" >"$CG_TEST_TMP/chronyd.log" 2>&1 &
chronyd_pid=$!
trap 'kill "$chronyd_pid" "$ref_pid" 2>/dev/null; stop_daemon' EXIT

cat >"$CG_TEST_TMP/ntp.toml" <<EOF2
mode = "guard"
[guard]
defer_to_time_services = false
[ntp]
servers = ["127.0.0.1:12302"]
serve = "127.0.0.1:12301"
EOF2
start_daemon --config "$CG_TEST_TMP/ntp.toml"
# Until the clock is within 2 ms of the reference, held for 10 s. Not 1 ms: chronyd keeps
# its time in software on top of this same clock, so while clockguard slews, chronyd's time
# moves with it until chronyd's next poll, and clockguard's frequency estimate sees that
# (on separate machines there is no such coupling).
watch_within 150 "$CG_TEST_TMP/watch.json" --params "$PARAMS" --until-abs-ns 2000000 --hold-s 10
cat "$CG_TEST_TMP/watch.json"
"$CG" tracking --runtime-dir "$RUNTIME"
"$CG" sources --runtime-dir "$RUNTIME"
tracking=$("$CG" tracking --json --runtime-dir "$RUNTIME")
jq -e '.converged == true' "$CG_TEST_TMP/watch.json" >/dev/null \
    || { tail -20 "$CG_TEST_TMP/chronyd.log"; fail "not within 2 ms of the reference through chronyd: $tracking"; }
echo "$tracking" | jq -e '.synchronized == true and .stratum == 3' >/dev/null \
    || fail "not synchronised to chronyd: $tracking"
"$CG" sources --json --runtime-dir "$RUNTIME" | jq -e '.sources[0].state == "selected" and .sources[0].stratum == 2' >/dev/null \
    || fail "chronyd source: $("$CG" sources --json --runtime-dir "$RUNTIME")"
echo "METRIC chrony-server-source converged_after_s=$(jq .converged_after_s "$CG_TEST_TMP/watch.json") offset_s=$(echo "$tracking" | jq .offset_s)"

# chronyd as a client of clockguard: -Q measures and prints, and never sets the clock.
timeout 60 "$CHRONYD" -Q -u root "server 127.0.0.1 port 12301 iburst" "cmdport 0" \
    "pidfile $CG_TEST_TMP/chronyd-client.pid" >"$CG_TEST_TMP/chronyd-q.log" 2>&1 \
    || { cat "$CG_TEST_TMP/chronyd-q.log"; fail "chronyd -Q failed"; }
cat "$CG_TEST_TMP/chronyd-q.log"
wrong=$(sed -n 's/.*System clock wrong by \(-\?[0-9.]*\) seconds.*/\1/p' "$CG_TEST_TMP/chronyd-q.log" | tail -1)
[[ -n "$wrong" ]] || fail "chronyd -Q gave no offset"
awk -v w="$wrong" 'BEGIN { exit !(w < 0.001 && w > -0.001) }' \
    || fail "chronyd -Q measured clockguard's server $wrong s off (more than 1 ms)"
echo "METRIC chrony-client offset_s=$wrong"
