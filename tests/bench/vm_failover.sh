#!/usr/bin/env bash
# Bench, in the test VM (`cargo xtask bench` runs it): how fast an IMAP worker killed by a
# backward step moves the VIP, side by side on the same two nodes (tests/vm/failover_lib.sh):
#   track_file    keepalived follows clockguard's track file (inotify, weight 0)
#   track_script  keepalived polls `clockguard service-check dovecot` (interval 1, fall 2)
#   port_check    keepalived polls "does port 143 accept?", the field's cron check
#                 (interval 1, fall 2): the master keeps listening, so it never fails over
# Each round: a fresh IMAP login, a 6 s backward step, a NOOP; the worker dies (exit 89).
# Times from the death (the kernel's exit time, in the journal) to clockguard's track file
# write and to the VIP answering on B. Prints one "RESULT {json}" line per mode.
set -euo pipefail
export CG_TEST_TMP=/run/cg-bench-failover
mkdir -p "$CG_TEST_TMP"
mountpoint -q "$CG_TEST_TMP" || mount -t tmpfs none "$CG_TEST_TMP"
source "$CG_REPO/tests/vm/lib.sh"
source "$CG_REPO/tests/vm/failover_lib.sh"
T="$CG_TEST_TMP"
ROUNDS=${CG_BENCH_ROUNDS:-8}
STEP_S=6
trap failover_cleanup EXIT
failover_setup

failover_config "$T/clockguard.toml"
DAEMON_NETNS=cgA start_daemon --config "$T/clockguard.toml"
healthy() { [[ $(status_json | jq -r '.services[0].state') == healthy ]]; }
start_keepalived B 100

printf '#!/bin/bash\nexec 3<>/dev/tcp/%s/143\n' "$A_IP" >"$T/port143.sh"
chmod 755 "$T/port143.sh"
TRACK_FILE=("vrrp_track_file cg_dovecot {
    file $T/track/dovecot
    weight 0
}" "track_file {
    cg_dovecot
}")
TRACK_SCRIPT=("vrrp_script cg_check {
    script \"$CG service-check dovecot --runtime-dir $RUNTIME\"
    interval 1
    fall 2
    rise 3
}" "track_script {
    cg_check
}")
PORT_CHECK=("vrrp_script port143 {
    script \"$T/port143.sh\"
    interval 1
    fall 2
    rise 3
}" "track_script {
    port143
}")

# run_mode NAME ROUNDS LIMIT_S DEFINITION USE: ROUNDS deaths with node A's keepalived
# following DEFINITION/USE (see start_keepalived); a round without failover within LIMIT_S
# counts as none.
run_mode() {
    local name=$1 rounds=$2 limit_s=$3 definition=$4 use=$5
    stop_keepalived_a
    start_keepalived A 150 "$definition" "$use"
    local to_vip=() to_track=() failovers=0
    for round in $(seq 1 "$rounds"); do
        for _ in $(seq 1 600); do healthy && break; sleep 0.1; done
        healthy || fail "$name round $round: dovecot not healthy again"
        wait_vip A 60 || fail "$name round $round: the VIP is not on A: $(tail -n 3 "$T/kaA/log")"
        imap_login
        local worker=$WORKER
        date -s "-$STEP_S sec" >/dev/null
        echo 'n NOOP' >&8
        local moved="" deadline=$(( SECONDS + limit_s ))
        while (( SECONDS < deadline )); do
            if vip_on B && [[ $(who_answers) == B ]]; then moved=$EPOCHREALTIME; break; fi
            sleep 0.01
        done
        wait_records 1 ".kind == \"died_from_time_jump\" and .pid == $worker"
        local died death_s
        died=$(audit_json | jq -c "select(.kind == \"died_from_time_jump\" and .pid == $worker)")
        death_s=$(date -d "$(jq -r .time <<<"$died")" +%s.%N)
        local written
        written=$(status_json | jq -r '.services[0].track_file_fault_written')
        to_track+=("$(awk -v a="$death_s" -v b="$(date -d "$written" +%s.%N)" 'BEGIN { printf "%.1f", (b - a) * 1000 }')")
        if [[ -n "$moved" ]]; then
            failovers=$(( failovers + 1 ))
            to_vip+=("$(awk -v a="$death_s" -v b="$moved" 'BEGIN { printf "%.0f", (b - a) * 1000 }')")
        fi
        local shown="none within $limit_s s"
        [[ -n "$moved" ]] && shown="${to_vip[-1]} ms"
        echo "$name round $round: track file +${to_track[-1]} ms, VIP answering on B: $shown"
    done
    local vip_json track_json
    vip_json=$(printf '%s\n' "${to_vip[@]}" | jq -s 'map(select(. != null))')
    track_json=$(printf '%s\n' "${to_track[@]}" | jq -s .)
    echo "RESULT $(jq -cn --arg mode "$name" --argjson rounds "$rounds" --argjson failovers "$failovers" \
        --argjson vip "$vip_json" --argjson track "$track_json" --argjson limit "$limit_s" \
        '{mode: $mode, rounds: $rounds, failovers: $failovers, limit_s: $limit,
          death_to_vip_ms: $vip, death_to_track_file_ms: $track}')"
}

stop_keepalived_a() {
    if [[ -f "$T/kaA/keepalived.pid" ]]; then
        kill "$(cat "$T/kaA/keepalived.pid")" 2>/dev/null || true
        for _ in $(seq 1 50); do [[ -f "$T/kaA/keepalived.pid" ]] || break; sleep 0.1; done
        rm -f "$T/kaA/keepalived.pid"
    fi
}

# CG_BENCH_MODES="track_file port_check" runs only those modes.
MODES=${CG_BENCH_MODES:-track_file track_script port_check}
# What must come back: `cargo xtask bench` fails the row when a mode has no RESULT.
echo "EXPECT mode $MODES"
[[ " $MODES " == *" track_file "* ]] && run_mode track_file "$ROUNDS" 20 "${TRACK_FILE[@]}"
[[ " $MODES " == *" track_script "* ]] && run_mode track_script "$ROUNDS" 20 "${TRACK_SCRIPT[@]}"
[[ " $MODES " == *" port_check "* ]] && run_mode port_check 1 15 "${PORT_CHECK[@]}"
true
