# An on-path attacker on the NTP path: `cg-ntpref relay` sits where the client sends NTP
# and moves every reply's receive and transmit timestamps 5 s ahead (plain NTP has no MAC
# to recompute). The server is Debian's chronyd 4.3 (run with -x: it never touches the
# clock), itself following cg-ntpref, whose clock is the VM's at the start. chronyd's
# NTS-KE names the relay (ntsntpserver) as the NTP server, as a hijacked route would.
#  1. NTS (require_nts): every forged reply fails its authenticator, is dropped and
#     counted; no correction starts and the clock stays on the reference's time.
#  2. Plain NTP through the same relay: the attacker moves the clock, but only at the
#     slew rate (83.3 ms/s) and never by a step (REALTIME - MONOTONIC does not change).
source "$(dirname "$0")/lib.sh"
need_vm

PARAMS="$CG_TEST_TMP/ref.json"
start_reference "$PARAMS" "$CG_TEST_TMP/ref.log" --listen 127.0.0.1:12300
ref_pid=$REF_PID
pki="$CG_TEST_TMP/pki"
make_test_pki "$pki"
# Its own address only: the relay takes 127.0.0.3 with the same port.
start_chronyd_nts_server "$pki" "bindaddress 127.0.0.1" "ntsntpserver 127.0.0.3"
chronyd_pid=$CHRONYD_PID
"$CG_BIN_DIR/cg-ntpref" relay --listen 127.0.0.3:12302 --upstream 127.0.0.1:12302 \
    --forge-s 5 >"$CG_TEST_TMP/relay.log" 2>&1 &
relay_pid=$!
trap 'kill "$chronyd_pid" "$ref_pid" "$relay_pid" 2>/dev/null; stop_daemon' EXIT
# On failure, what the relay and chronyd said.
peers_log() { tail -5 "$CG_TEST_TMP/relay.log" "$CG_TEST_TMP/chronyd.log"; }

# The system clock − the reference, and the reference's time (ns).
ref_offset() { "$CG_BIN_DIR/cg-ntpref" offset --params "$PARAMS"; }

# 1. NTS through the attacker.
cat >"$CG_TEST_TMP/nts.toml" <<EOF2
mode = "guard"
[guard]
defer_to_time_services = false
[ntp]
nts_servers = ["127.0.0.1:4460"]
nts_ca = "$pki/ca.pem"
require_nts = true
minpoll = 0
maxpoll = 0
EOF2
start_daemon --config "$CG_TEST_TMP/nts.toml"
sources=$(wait_json 300 '.nts[0].rejected >= 6' "$CG" sources --json --runtime-dir "$RUNTIME") || true
"$CG" sources --runtime-dir "$RUNTIME"
echo "$sources" | jq -e '.nts[0] | .address == "127.0.0.3:12302" and .key_exchanges >= 1
        and .rejected >= 6 and .authenticated == 0' >/dev/null \
    || { peers_log; fail "NTS through the attacker: $sources"; }
tracking=$("$CG" tracking --json --runtime-dir "$RUNTIME")
echo "$tracking" | jq -e '.synchronized == false and .corrections == 0
        and (.slew.remaining_ns // 0) == 0' >/dev/null \
    || fail "a forged reply was used: $tracking"
offset=$(ref_offset | jq .offset_ns)
assert_close "$offset" 0 5000000
rejected=$(echo "$sources" | jq '.nts[0].rejected')
stop_daemon
echo "METRIC onpath-nts rejected=$rejected clock_minus_reference_ns=$offset"

# 2. Plain NTP through the attacker.
cat >"$CG_TEST_TMP/plain.toml" <<EOF2
mode = "guard"
[guard]
defer_to_time_services = false
[ntp]
servers = ["127.0.0.3:12302"]
minpoll = 0
maxpoll = 0
EOF2
step_gauge_before=$(offset_ns)
start_daemon --config "$CG_TEST_TMP/plain.toml"
tracking=$(wait_json 300 '(.slew.remaining_ns // 0) > 1000000000' \
    "$CG" tracking --json --runtime-dir "$RUNTIME") \
    || { peers_log; fail "plain NTP did not follow the forged +5 s: $tracking"; }
first=$(ref_offset)
sleep 6
second=$(ref_offset)
"$CG" tracking --runtime-dir "$RUNTIME"
# How far the clock moved against the reference, and in how long (the reference runs on
# CLOCK_MONOTONIC_RAW, never slewed).
moved_ns=$(( $(echo "$second" | jq .offset_ns) - $(echo "$first" | jq .offset_ns) ))
took_ns=$(( $(echo "$second" | jq .ref_ns) - $(echo "$first" | jq .ref_ns) ))
# At most 83 333 ppm of the time taken (and 2 ms for the two readings).
limit_ns=$(( took_ns * 83334 / 1000000 + 2000000 ))
[[ $moved_ns -gt 300000000 ]] || fail "the clock moved only $moved_ns ns toward the forged time"
[[ $moved_ns -le $limit_ns ]] || fail "the clock moved $moved_ns ns in $took_ns ns: faster than the slew rate"
# A slew moves REALTIME and MONOTONIC together; a step would move REALTIME alone.
assert_close "$(offset_ns)" "$step_gauge_before" 1000000
echo "METRIC onpath-plain moved_ms=$(( moved_ns / 1000000 )) in_ms=$(( took_ns / 1000000 )) \
rate_ppm=$(( moved_ns * 1000000 / took_ns ))"
