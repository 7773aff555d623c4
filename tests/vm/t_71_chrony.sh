# chrony interoperability, with Debian's chronyd 4.3 (unpacked by `cargo xtask setup`, run
# with -x so that it never touches the clock: it then keeps its notion of the time in
# software). The chain: cg-ntpref (0.5 s ahead of the VM's clock) → chronyd as an NTS
# server (a certificate from a CA this test makes) → clockguard in guard mode with
# `require_nts`, which takes chronyd's keys and cookies over NTS-KE (TLS 1.3), accepts
# only authenticated replies and slews the clock to the reference's time. A server on the
# same machine cannot be its own clock's reference, hence the upstream. A second NTS name,
# 127.0.0.2, reaches the same chronyd but is not in its certificate: its key exchange must
# fail and nothing from it be used. Then `chronyd -Q` as an NTS client of clockguard's
# own NTS server (NTS-KE on 4461 with the test CA's certificate) accepts it and measures
# an offset under 1 ms, every request authenticated.
source "$(dirname "$0")/lib.sh"
need_vm

CHRONYD="$CG_REPO/target/tools/chrony/usr/sbin/chronyd"
PARAMS="$CG_TEST_TMP/ref.json"
start_reference "$PARAMS" "$CG_TEST_TMP/ref.log" --listen 127.0.0.1:12300 --offset-s 0.5
ref_pid=$REF_PID
pki="$CG_TEST_TMP/pki"
make_test_pki "$pki"
start_chronyd_nts_server "$pki"
chronyd_pid=$CHRONYD_PID
trap 'kill "$chronyd_pid" "$ref_pid" 2>/dev/null; stop_daemon' EXIT

cat >"$CG_TEST_TMP/ntp.toml" <<EOF2
mode = "guard"
[guard]
defer_to_time_services = false
[ntp]
nts_servers = ["127.0.0.1:4460", "127.0.0.2:4460"]
nts_ca = "$pki/ca.pem"
require_nts = true
serve = "127.0.0.1:12301"
nts_ke = "127.0.0.1:4461"
nts_cert = "$pki/server.pem"
nts_key = "$pki/server.key"
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
# NTS: chronyd named its NTP port (12302) in the key exchange; every reply used was
# authenticated, and none was dropped.
sources=$("$CG" sources --json --runtime-dir "$RUNTIME")
echo "$sources" | jq -e '.nts[0] | .name == "127.0.0.1:4460" and .address == "127.0.0.1:12302"
        and .key_exchanges >= 1 and .authenticated >= 4 and .rejected == 0 and .cookies >= 1' \
    >/dev/null || fail "NTS with chronyd: $sources"
# The name the certificate does not cover: refused by TLS, never polled.
echo "$sources" | jq -e '.nts[1] | .address == null and .key_exchange_errors >= 1
        and (.last_error | test("certificate"; "i")) and .authenticated == 0' >/dev/null \
    || fail "NTS to a name outside chronyd's certificate: $sources"
[[ $(echo "$sources" | jq '.sources | length') == 1 ]] || fail "sources: $sources"
echo "METRIC chrony-nts-server authenticated=$(echo "$sources" | jq '.nts[0].authenticated') \
cookies=$(echo "$sources" | jq '.nts[0].cookies') rejected=$(echo "$sources" | jq '.nts[0].rejected')"
echo "METRIC chrony-server-source converged_after_s=$(jq .converged_after_s "$CG_TEST_TMP/watch.json") offset_s=$(echo "$tracking" | jq .offset_s)"

# chronyd as an NTS client of clockguard: -Q measures and prints, and never sets the
# clock. The key exchange names the NTP port (12301); chronyd never falls back to plain
# NTP for an `nts` server.
timeout 60 "$CHRONYD" -Q -u root "server 127.0.0.1 iburst nts ntsport 4461" \
    "ntstrustedcerts $pki/ca.pem" "cmdport 0" \
    "pidfile $CG_TEST_TMP/chronyd-client.pid" >"$CG_TEST_TMP/chronyd-q.log" 2>&1 \
    || { cat "$CG_TEST_TMP/chronyd-q.log"; fail "chronyd -Q failed"; }
cat "$CG_TEST_TMP/chronyd-q.log"
wrong=$(sed -n 's/.*System clock wrong by \(-\?[0-9.]*\) seconds.*/\1/p' "$CG_TEST_TMP/chronyd-q.log" | tail -1)
[[ -n "$wrong" ]] || fail "chronyd -Q gave no offset"
awk -v w="$wrong" 'BEGIN { exit !(w < 0.001 && w > -0.001) }' \
    || fail "chronyd -Q measured clockguard's server $wrong s off (more than 1 ms)"
served=$("$CG" tracking --json --runtime-dir "$RUNTIME" | jq -c .server)
echo "clockguard's server: $served"
echo "$served" | jq -e '.nts_ke == "127.0.0.1:4461" and .counters.nts_key_exchanges >= 1
        and .counters.nts_answered >= 2 and .counters.nts_naks == 0 and .counters.answered == 0' \
    >/dev/null || fail "chronyd's requests were not all NTS-authenticated: $served"
echo "METRIC chrony-nts-client offset_s=$wrong nts_answered=$(echo "$served" | jq .counters.nts_answered) key_exchanges=$(echo "$served" | jq .counters.nts_key_exchanges)"
