#!/usr/bin/env bash
# Failover from a time jump, with real keepalived and dovecot. Two network namespaces are
# two nodes: keepalived (VRRP unicast, advert_int 1) holds the VIP on node A, whose
# instance follows clockguard's track file for dovecot; dovecot runs on A with a logged-in
# IMAP session (a live imap worker).
# - A 3 s backward step: the worker sleeps it off, nothing dies, the VIP stays on A.
# - A 10 s backward step: the worker kills itself, clockguard journals the chain (the step,
#   who made it, the death and its exit status), runs the notify command, flips the track
#   file, and keepalived moves the VIP to B. The time from the death to the VIP on B is
#   reported.
# - dovecot keeps answering: after the hold (the 10 s of the jump) and `rise` good probes
#   the track file clears and the VIP returns to A.
source "$(dirname "$0")/lib.sh"
need_vm
command -v keepalived >/dev/null && command -v dovecot >/dev/null ||
    fail "keepalived and dovecot are needed (cargo xtask setup installs them)"

T="$CG_TEST_TMP"   # a tmpfs: inotify works there (not on the 9p share)
chmod 755 "$T"     # dovecot's auth and mail processes run as other users
VIP=10.77.0.100
A_IP=10.77.0.1
B_IP=10.77.0.2
cleanup() {
    set +e
    exec 8>&- 2>/dev/null
    [[ -f "$T/dovecot/run/master.pid" ]] && kill "$(cat "$T/dovecot/run/master.pid")"
    for node in A B; do
        [[ -f "$T/ka$node/keepalived.pid" ]] && kill "$(cat "$T/ka$node/keepalived.pid")"
    done
    [[ -n "${IMAP_PID:-}" ]] && kill "$IMAP_PID"
    [[ -n "${RESPONDERS:-}" ]] && kill $RESPONDERS
    stop_daemon
    sleep 0.5
    ip netns del cgA; ip netns del cgB
}
trap cleanup EXIT

ip netns add cgA
ip netns add cgB
ip link add cg-va type veth peer name cg-vb
ip link set cg-va netns cgA
ip link set cg-vb netns cgB
ip -n cgA addr add "$A_IP/24" dev cg-va
ip -n cgB addr add "$B_IP/24" dev cg-vb
for node in A B; do
    ip -n "cg$node" link set lo up
done
ip -n cgA link set cg-va up
ip -n cgB link set cg-vb up

# dovecot on node A: plain-text IMAP, one user, everything under the test's tmpfs.
mkdir -p "$T/dovecot/run" "$T/dovecot/state" "$T/mail"
chmod 777 "$T/mail"
echo "u1:{PLAIN}pw1:65534:65534::$T/mail/u1" >"$T/dovecot/passwd"
cat >"$T/dovecot/dovecot.conf" <<CONF
protocols = imap
listen = $A_IP
base_dir = $T/dovecot/run
state_dir = $T/dovecot/state
log_path = $T/dovecot/dovecot.log
ssl = no
disable_plaintext_auth = no
mail_location = maildir:~/Maildir
first_valid_uid = 1
passdb {
  driver = passwd-file
  args = $T/dovecot/passwd
}
userdb {
  driver = passwd-file
  args = $T/dovecot/passwd
}
CONF
ip netns exec cgA dovecot -c "$T/dovecot/dovecot.conf" || fail "dovecot did not start"

# clockguard on node A (its probe reaches dovecot there).
cat >"$T/notify.sh" <<'HOOK'
#!/bin/sh
{ env | grep '^CLOCKGUARD_' | sort; echo "stdin: $(cat)"; echo --; } >>"$(dirname "$0")/notify.log"
HOOK
chmod +x "$T/notify.sh"
cat >"$T/clockguard.toml" <<CONF
mode = "observe"
[[service]]
name = "dovecot"
pidfile = "$T/dovecot/run/master.pid"
probe = "$A_IP:143"
probe_expect = "* OK"
interval_ms = 500
fall = 2
rise = 3
hold_s = 2
jump_window_s = 30
track_file = "$T/track/dovecot"
notify = ["$T/notify.sh"]
CONF
DAEMON_NETNS=cgA start_daemon --config "$T/clockguard.toml"
service() { status_json | jq -c '.services[] | select(.name == "dovecot")'; }
for _ in $(seq 1 100); do
    [[ $(service | jq -r .state) == healthy ]] && break
    sleep 0.1
done
[[ $(service | jq -r .state) == healthy ]] || fail "dovecot is not healthy: $(service)"
[[ $(cat "$T/track/dovecot") == 0 ]] || fail "track file: $(cat "$T/track/dovecot")"

# keepalived on both nodes; A (priority 150) follows the track file, B (100) does not.
for node in A:150:$A_IP:$B_IP:cg-va B:100:$B_IP:$A_IP:cg-vb; do
    IFS=: read -r name priority me peer dev <<<"$node"
    mkdir -p "$T/ka$name"
    track=""
    if [[ $name == A ]]; then
        track="vrrp_track_file cg_dovecot {
    file $T/track/dovecot
    weight 0
}"
    fi
    cat >"$T/ka$name/keepalived.conf" <<CONF
global_defs {
    router_id node$name
}
$track
vrrp_instance VI_CG {
    state BACKUP
    interface $dev
    virtual_router_id 77
    priority $priority
    advert_int 1
    unicast_src_ip $me
    unicast_peer {
        $peer
    }
    virtual_ipaddress {
        $VIP/24
    }
    $([[ $name == A ]] && echo "track_file {
        cg_dovecot
    }")
}
CONF
    ip netns exec "cg$name" keepalived -n -l -D -f "$T/ka$name/keepalived.conf" \
        -p "$T/ka$name/keepalived.pid" -r "$T/ka$name/vrrp.pid" -c "$T/ka$name/checkers.pid" \
        >"$T/ka$name/log" 2>&1 &
done
# (No `| grep -q`: with pipefail, grep closing the pipe early fails the pipeline.)
vip_on() { [[ $(ip -n "cg$1" -o addr show) == *" $VIP/"* ]]; }
# Each node answers its name on TCP port 8077 (of any of its addresses, the VIP included);
# who_answers asks the VIP from node A: "A" while A holds it, "B" once it moved.
for node in A B; do
    ip netns exec "cg$node" python3 -c "
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 8077)); s.listen(16)
while True:
    c, _ = s.accept(); c.sendall(b'$node\\n'); c.close()
" &
    RESPONDERS+=" $!"
done
who_answers() { ip netns exec cgA timeout 0.5 bash -c "exec 3<>/dev/tcp/$VIP/8077 && head -n 1 <&3" 2>/dev/null; }
for _ in $(seq 1 300); do vip_on A && break; sleep 0.1; done
vip_on A || fail "the VIP never came up on A: $(tail -n 5 "$T/kaA/log")"
vip_on B && fail "the VIP is on both nodes"
for _ in $(seq 1 50); do [[ $(who_answers) == A ]] && break; sleep 0.1; done
[[ $(who_answers) == A ]] || fail "the VIP does not answer on A"
echo "VIP $VIP on node A"

# A logged-in IMAP session on A: commands from fifo imap.in, answers in imap.out.
mkfifo "$T/imap.in"
ip netns exec cgA bash -c "exec 3<>/dev/tcp/$A_IP/143 || exit 1
    cat <&3 >'$T/imap.out' &
    printf 'a LOGIN u1 pw1\r\n' >&3
    while read -r line; do printf '%s\r\n' \"\$line\" >&3; done <'$T/imap.in'" &
IMAP_PID=$!
exec 8>"$T/imap.in"
for _ in $(seq 1 100); do grep -q '^a OK' "$T/imap.out" 2>/dev/null && break; sleep 0.1; done
grep -q '^a OK' "$T/imap.out" || fail "IMAP login failed: $(cat "$T/imap.out"; tail -n 5 "$T/dovecot/dovecot.log")"
worker=$(pgrep -x imap) || fail "no imap worker"
[[ $(wc -w <<<"$worker") == 1 ]] || fail "more than one imap worker: $worker"
echo "imap worker: pid $worker"

# 1. A 3 s backward step: the worker sleeps through it.
date -s '-3 sec' >/dev/null
echo 'b NOOP' >&8
for _ in $(seq 1 100); do grep -q '^b OK' "$T/imap.out" && break; sleep 0.1; done
grep -q '^b OK' "$T/imap.out" || fail "the worker did not answer after the 3 s step: $(cat "$T/imap.out")"
kill -0 "$worker" || fail "the worker died from a 3 s step"
sleep 2
[[ $(audit_json | jq -c 'select(.source == "service" and .kind != "probe_failed")' | wc -l) == 0 ]] ||
    fail "service records after the 3 s step: $(audit_json | jq -c 'select(.source == "service")')"
[[ $(cat "$T/track/dovecot") == 0 ]] || fail "the track file flipped on a 3 s step"
vip_on A || fail "the VIP left A on a 3 s step"
grep 'Time just moved backwards' "$T/dovecot/dovecot.log" | tail -n 1

# 2. A 10 s backward step: the worker kills itself on its next wake-up (the NOOP).
step_seq_before=$(audit_json | jq -s 'map(.seq) | max // 0')
date -s '-10 sec' >/dev/null
echo 'c NOOP' >&8
moved=""
for _ in $(seq 1 1500); do
    if vip_on B && [[ $(who_answers) == B ]]; then moved=$EPOCHREALTIME; break; fi
    sleep 0.01
done
[[ -n "$moved" ]] || fail "the VIP did not move to B: $(service); keepalived A: $(tail -n 5 "$T/kaA/log")"
kill -0 "$worker" 2>/dev/null && fail "the worker is still alive after the 10 s step"
vip_on A && fail "the VIP is on both nodes"
wait_records 1 ".kind == \"died_from_time_jump\" and .pid == $worker"
died=$(audit_json | jq -c "select(.kind == \"died_from_time_jump\" and .pid == $worker)")
echo "death: $died"
step=$(audit_json | jq -c "select(.source == \"syscall\" and .kind == \"step\" and .seq > $step_seq_before)" | head -n 1)
echo "step: $step"
jq -e '.comm == "imap" and .result == "exit 89" and .cause == "step" and .verdict == "fault"
    and .detail.service == "dovecot" and .detail.jump.comm == "date"' <<<"$died" >/dev/null ||
    fail "the record does not carry the chain: $died"
[[ $(jq .detail.jump.seq <<<"$died") == $(jq .seq <<<"$step") ]] || fail "the death is not tied to the step record"
assert_close "$(jq .delta_ns <<<"$died")" -10000000000 50000000
grep -q "imap($worker): Fatal: Time just moved backwards" "$T/dovecot/dovecot.log" ||
    fail "dovecot's log does not show the worker killing itself"
[[ $(cat "$T/track/dovecot") == 1 ]] || fail "the track file is not 1"
death_s=$(date -d "$(jq -r .time <<<"$died")" +%s.%N)
latency_ms=$(awk -v a="$death_s" -v b="$moved" 'BEGIN { printf "%.0f", (b - a) * 1000 }')
# The track file is written once, by rename: its mtime is when clockguard flipped it.
flipped_ms=$(awk -v a="$death_s" -v b="$(stat -c %.9Y "$T/track/dovecot")" 'BEGIN { printf "%.1f", (b - a) * 1000 }')
echo "METRIC failover_death_to_track_file_ms $flipped_ms ms"
echo "METRIC failover_death_to_vip_answering_on_b_ms $latency_ms ms"
[[ $latency_ms -ge 0 ]] || fail "the VIP moved before the death? ($latency_ms ms)"
grep -q 'CLOCKGUARD_EVENT=died_from_time_jump' "$T/notify.log" || fail "notify not run: $(cat "$T/notify.log" 2>&1)"
grep -q 'CLOCKGUARD_JUMP_COMM=date' "$T/notify.log" || fail "notify without the jump: $(cat "$T/notify.log")"
grep -q '^stdin: {"seq":' "$T/notify.log" || fail "notify without the JSON record: $(cat "$T/notify.log")"
"$CG" service-check dovecot --runtime-dir "$RUNTIME" && fail "service-check passes during the fault"

# 3. dovecot still answers: the fault clears after the hold (10 s) and 3 good probes.
for _ in $(seq 1 300); do
    [[ $(cat "$T/track/dovecot") == 0 ]] && break
    sleep 0.1
done
[[ $(cat "$T/track/dovecot") == 0 ]] || fail "the track file did not clear: $(service)"
recovered=$(audit_json | jq -c 'select(.kind == "recovered")' | tail -n 1)
[[ -n "$recovered" ]] || fail "no recovered record"
held_s=$(awk -v a="$death_s" -v b="$(date -d "$(jq -r .time <<<"$recovered")" +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
echo "recovered $held_s s after the death: $recovered"
awk -v h="$held_s" 'BEGIN { exit !(h >= 10.0) }' || fail "cleared after $held_s s, before the 10 s hold"
"$CG" service-check dovecot --runtime-dir "$RUNTIME" || fail "service-check fails once healthy"
for _ in $(seq 1 100); do [[ $(who_answers) == A ]] && break; sleep 0.1; done
[[ $(who_answers) == A ]] || fail "the VIP did not return to A"
audit_json | jq -c 'select(.source == "service")'
echo "PASS: 3 s step survived; 10 s step: worker death -> VIP on B in $latency_ms ms; cleared after $held_s s"
