# NTP servers and pools by name, end to end through the resolver (the guest's /etc/hosts,
# copy-on-write: the host's is untouched). A pool name with four addresses gives
# `pool_size` = 3 sources; a server name points at an address where nothing answers. Then:
# the server's name moves to an address where a server answers, and one pool member stops.
# clockguard re-resolves the names of unreachable sources and moves to the new addresses
# (chrony's behaviour for unreachable sources), without a restart. Observe mode: nothing
# here changes the clock.
source "$(dirname "$0")/lib.sh"
need_vm

PORT=12373
HOSTS_SAVED="$CG_TEST_TMP/hosts.saved"
cp /etc/hosts "$HOSTS_SAVED"
declare -A ref_pids=()
cleanup() {
    stop_daemon
    for pid in "${ref_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    cat "$HOSTS_SAVED" >/etc/hosts
}
trap cleanup EXIT

# start_ref ADDR: a reference server (on time) on ADDR:PORT.
start_ref() {
    start_reference "$CG_TEST_TMP/ref-$1.json" "$CG_TEST_TMP/ref-$1.log" --listen "$1:$PORT"
    ref_pids[$1]=$REF_PID
}
for a in 127.0.0.11 127.0.0.12 127.0.0.13 127.0.0.14 127.0.0.22; do start_ref "$a"; done

# hosts LINES...: /etc/hosts as saved, plus LINES (written in place: it may be a mount).
hosts() { { cat "$HOSTS_SAVED"; printf '%s\n' "$@"; } >"$CG_TEST_TMP/hosts.new"; cat "$CG_TEST_TMP/hosts.new" >/etc/hosts; }
POOL=("127.0.0.11 pool.cg.test" "127.0.0.12 pool.cg.test" "127.0.0.13 pool.cg.test" "127.0.0.14 pool.cg.test")
hosts "${POOL[@]}" "127.0.0.21 moving.cg.test"
echo "pool.cg.test: $(getent hosts pool.cg.test | awk '{print $1}' | tr '\n' ' ')"

cat >"$CG_TEST_TMP/ntp.toml" <<EOF2
mode = "observe"
log_level = "info"
[ntp]
servers = ["moving.cg.test:$PORT"]
pools = ["pool.cg.test:$PORT"]
pool_size = 3
# Polls stay 4 s apart (the servers are ours, on loopback), so that 8 unanswered ones
# take 32 s, not up to 2 h.
minpoll = 2
maxpoll = 2
EOF2
start_daemon --config "$CG_TEST_TMP/ntp.toml"
sources_json() { "$CG" sources --json --runtime-dir "$RUNTIME"; }
# reachable ADDR...: each ADDR:PORT is a source that answers.
reachable() {
    local a
    for a in "$@"; do
        sources_json | jq -e --arg addr "$a:$PORT" 'any(.sources[]; .address == $addr and .reach != "0")' >/dev/null || return 1
    done
}
wait_for() { # SECONDS COMMAND...
    local limit=$1; shift
    for _ in $(seq 1 $(( limit * 2 ))); do "$@" && return 0; sleep 0.5; done
    return 1
}

wait_for 30 reachable 127.0.0.11 127.0.0.12 127.0.0.13 \
    || fail "the pool's first three addresses are not sources: $(sources_json | jq -c '[.sources[] | {name, address, reach}]')"
"$CG" sources --runtime-dir "$RUNTIME"
sources_json | jq -e '[.sources[] | select(.name == "pool.cg.test:'$PORT'")] | length == 3' >/dev/null \
    || fail "pool_size = 3 not kept: $(sources_json | jq -c '[.sources[] | {name, address}]')"

# The server's name moves; a pool member stops answering.
hosts "${POOL[@]}" "127.0.0.22 moving.cg.test"
kill "${ref_pids[127.0.0.13]}"; unset 'ref_pids[127.0.0.13]'
started=$(date +%s)
# 8 unanswered requests in a row (polls 4 s apart) make a name due again.
wait_for 100 reachable 127.0.0.22 127.0.0.14 \
    || fail "did not move to the new addresses: $(sources_json | jq -c '[.sources[] | {name, address, reach, state}]')"
took=$(( $(date +%s) - started ))
"$CG" sources --runtime-dir "$RUNTIME"
grep -E "unreachable, trying|resolve" "$CG_TEST_TMP/daemon.log" | sed 's/\x1b\[[0-9;]*m//g'
grep -q "moving.cg.test:$PORT: 127.0.0.21:$PORT unreachable, trying 127.0.0.22:$PORT" "$CG_TEST_TMP/daemon.log" \
    || fail "the log does not say the server moved"
grep -q "pool.cg.test:$PORT: 127.0.0.13:$PORT unreachable, trying 127.0.0.14:$PORT" "$CG_TEST_TMP/daemon.log" \
    || fail "the log does not say the pool member was replaced"
# The replaced sources stay listed as unreachable; the name still has its count.
sources_json | jq -e '[.sources[] | select(.name == "pool.cg.test:'$PORT'" and .reach != "0")] | length == 3' >/dev/null \
    || fail "the pool is not back to 3 answering sources: $(sources_json | jq -c '[.sources[] | {name, address, reach}]')"
"$CG" tracking --json --runtime-dir "$RUNTIME" | jq -e '.synchronized' >/dev/null \
    || fail "not synchronised after the moves: $("$CG" tracking --json --runtime-dir "$RUNTIME" | jq -c .)"
echo "METRIC ntp-names moved_after_s=$took"
