#!/usr/bin/env bash
# Bench, in the systemd machine (`cargo xtask bench` runs it, in two boots of one copy of
# the image):
#   install  first boot: the package installed (enabled, as apt does it), then sync.
#   measure  second boot, clockguard started by systemd at boot like any enabled service:
#     boot     CLOCK_MONOTONIC (since the kernel started) when clockguard.service became
#              active, i.e. when systemd received READY=1; and when userspace began.
#     startup  ROUNDS alternating rounds: clockguard (the packaged unit, Type=notify, its
#              default config: observe mode, no NTP source) and Debian's chronyd (the
#              package's unit type: Type=forking with a PID file, whose parent exits once
#              the daemon is initialised; -F 1 as Debian's DAEMON_OPTS; no source either),
#              each started cold by systemd; from the start job (InactiveExit) to active
#              (ActiveEnter), and for clockguard also from exec to READY=1, as systemd timed
#              them (µs, CLOCK_MONOTONIC).
#     storm    STORM_ROUNDS rounds each, alternating, of journald = true / false: 100,000
#              clock calls the kernel rejects (cg-clockcall storm) with repeats_in_full = 0,
#              so every call is a record; the records journaled per second until the
#              journal stood still for 5 s, the ring-buffer drops, the daemon's CPU time,
#              the entries sent to journald and the ones journald kept (it rate-limits a
#              unit to 10,000 per 30 s unless told otherwise).
# Prints "RESULT {json}" lines.
export CG_TEST_TMP=/run/cg-bench-systemd
mkdir -p "$CG_TEST_TMP"
source "$CG_REPO/tests/systemd/lib.sh"
ROUNDS=${CG_BENCH_ROUNDS:-5}
STORM_ROUNDS=${CG_BENCH_STORM_ROUNDS:-2}
STORM_CALLS=100000
# One line per `clockguard status` that gave no answer (see status_json).
RETRIES=/run/cg-bench-status-retries

show() { systemctl show -p "$2" --value "$1"; }

install() {
    apt_install
    [[ $(systemctl is-enabled clockguard) == enabled ]] || fail "clockguard not enabled after install"
    systemctl stop clockguard
    sync
    jq -cn --arg version "$(dpkg-query -W -f='${Version}' clockguard)" \
        '{what: "install", version: $version, enabled: true}' | sed 's/^/RESULT /'
}

boot() {
    wait_active clockguard
    jq -cn --argjson ready "$(show clockguard ActiveEnterTimestampMonotonic)" \
        --argjson exec "$(show clockguard ExecMainStartTimestampMonotonic)" \
        --argjson userspace "$(systemctl show -p UserspaceTimestampMonotonic --value)" \
        '{what: "boot", boot_to_ready_s: ($ready / 1e6), userspace_start_s: ($userspace / 1e6),
          exec_to_ready_ms: (($ready - $exec) / 1e3)}' | sed 's/^/RESULT /'
    # Where the boot's start-up went: the daemon's own log lines, on CLOCK_MONOTONIC.
    # (awk, not head: under pipefail a closed pipe would fail the script)
    journalctl -b -u clockguard -o short-monotonic --no-pager | awk 'NR <= 8'
    systemd-analyze critical-chain clockguard.service --no-pager 2>/dev/null || true
    systemd-analyze blame --no-pager 2>/dev/null | awk 'NR <= 12' || true
}

# timed UNIT NAME ROUND: the unit's start as systemd timed it, one RESULT line.
timed() {
    local unit=$1 name=$2 round=$3 begin exec ready notify
    begin=$(show "$unit" InactiveExitTimestampMonotonic)
    exec=$(show "$unit" ExecMainStartTimestampMonotonic)
    ready=$(show "$unit" ActiveEnterTimestampMonotonic)
    (( ready > begin && begin > 0 )) || fail "$unit: no start timestamps ($begin, $ready)"
    # Exec to READY=1 only means something for Type=notify: a forking unit's main process
    # is known (and "started") only once its parent has exited.
    [[ $(show "$unit" Type) == notify ]] && notify=true || notify=false
    jq -cn --arg daemon "$name" --argjson round "$round" --argjson begin "$begin" \
        --argjson exec "$exec" --argjson ready "$ready" --argjson notify "$notify" \
        '{what: "startup", daemon: $daemon, round: $round, start_to_active_ms: (($ready - $begin) / 1e3),
          exec_to_ready_ms: (if $notify and $exec > 0 then ($ready - $exec) / 1e3 else null end)}' \
        | sed 's/^/RESULT /'
}

startup() {
    local chronyd="$CG_REPO/target/tools/chrony/usr/sbin/chronyd" dir=/run/cg-bench-chrony
    [[ -x "$chronyd" ]] || fail "no $chronyd: run cargo xtask setup"
    mkdir -p "$dir"
    cat >"$dir/chrony.conf" <<EOF
pidfile $dir/chronyd.pid
driftfile $dir/chrony.drift
bindcmdaddress $dir/chronyd.sock
makestep 1 3
rtcsync
EOF
    echo "EXPECT daemon clockguard chronyd"
    for round in $(seq 1 "$ROUNDS"); do
        systemctl stop clockguard
        systemctl start clockguard
        timed clockguard.service clockguard "$round"
        systemctl stop clockguard
        # Debian's chrony.service runs as _chrony, which this image has not: root here.
        systemd-run --quiet --unit="cg-bench-chronyd-$round" -p Type=forking -p PIDFile="$dir/chronyd.pid" \
            "$chronyd" -f "$dir/chrony.conf" -u root -F 1
        wait_active "cg-bench-chronyd-$round"
        timed "cg-bench-chronyd-$round.service" chronyd "$round"
        systemctl stop "cg-bench-chronyd-$round"
    done
}

# The daemon's status. Under the storm, with one emulated CPU, an answer can take longer
# than the CLI's 10 s: asked again (up to 5 times), and each retry said.
status_json() {
    local try
    for try in 1 2 3 4 5; do
        clockguard status --json 2>/dev/null && return 0
        echo "status: no answer (try $try)" | tee -a "$RETRIES" >&2
    done
    return 1
}
# The syscall records journald kept as entries of the unit.
journald_kept() { journalctl -b -u clockguard -q -o cat --no-pager CLOCKGUARD_SOURCE=syscall | wc -l; }
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }

# storm_round ON ROUND
storm_round() {
    local on=$1 round=$2 before after pid ticks0 kept0 t0 last seq
    sed -i -e "s/^journald = .*/journald = $on/" -e 's/^repeats_in_full = .*/repeats_in_full = 0/' "$CONF"
    systemctl restart clockguard
    wait_active clockguard
    sleep 2
    pid=$(main_pid)
    before=$(status_json)
    kept0=$(journald_kept)
    ticks0=$(cpu_ticks "$pid")
    : >"$RETRIES"
    t0=$EPOCHREALTIME
    "$CALL" storm "$STORM_CALLS" >/dev/null
    # Until the journal stood still for 5 s (at most 300 s).
    seq=$(jq .journal.next_seq <<<"$before")
    last=$t0
    local still=0
    for _ in $(seq 1 600); do
        sleep 0.5
        now_seq=$(status_json | jq .journal.next_seq)
        if (( now_seq != seq )); then seq=$now_seq; last=$EPOCHREALTIME; still=0; else still=$((still + 1)); fi
        (( still >= 10 )) && break
    done
    after=$(status_json)
    jq -cn --argjson on "$on" --argjson round "$round" --argjson b "$before" --argjson a "$after" \
        --argjson t0 "$t0" --argjson last "$last" --argjson cpu "$(( $(cpu_ticks "$pid") - ticks0 ))" \
        --argjson kept "$(( $(journald_kept) - kept0 ))" --argjson calls "$STORM_CALLS" \
        --argjson retries "$(wc -l <"$RETRIES")" \
        '($a.journal.next_seq - $b.journal.next_seq) as $records
         | {what: "storm", journald: (if $on then "on" else "off" end), round: $round, calls: $calls,
            records: $records, seconds: (($last - $t0) * 1000 | round / 1000),
            records_per_s: ($records / ($last - $t0) | round),
            ring_buffer_drops: ($a.ring_buffer_drops - $b.ring_buffer_drops),
            daemon_cpu_s: ($cpu / 100),
            journald_sent: ($a.daemon.journald_entries - $b.daemon.journald_entries),
            journald_not_taken: ($a.daemon.journald_dropped - $b.daemon.journald_dropped),
            journald_kept: $kept, status_unanswered: $retries}' | sed 's/^/RESULT /'
}

storm() {
    cp "$CONF" /run/cg-bench-clockguard.toml
    echo "EXPECT journald on off"
    for round in $(seq 1 "$STORM_ROUNDS"); do
        storm_round true "$round"
        storm_round false "$round"
    done
    cp /run/cg-bench-clockguard.toml "$CONF"
}

case "${1:-}" in
install) install ;;
measure)
    boot
    startup
    storm
    ;;
*)
    echo "usage: $0 install|measure" >&2
    exit 2
    ;;
esac
