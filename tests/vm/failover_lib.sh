# The two-node failover setup shared by t_90_failover.sh and the failover bench (sourced
# after lib.sh). Two network namespaces are two nodes, cgA and cgB, joined by a veth pair;
# keepalived (VRRP unicast, advert_int 1) on each; dovecot (plain-text IMAP, one user,
# everything under $T) on A; every node answers its name on TCP port 8077.
# Needs T: a tmpfs directory (inotify works there, unlike on the 9p share).

VIP=10.77.0.100
A_IP=10.77.0.1
B_IP=10.77.0.2
RESPONDERS=""
source "$(dirname "${BASH_SOURCE[0]}")/../dovecot_lib.sh"

failover_cleanup() {
    set +e
    exec 8>&-
    [[ -f "$T/dovecot/run/master.pid" ]] && kill "$(cat "$T/dovecot/run/master.pid")"
    for node in A B; do
        [[ -f "$T/ka$node/keepalived.pid" ]] && kill "$(cat "$T/ka$node/keepalived.pid")"
    done
    [[ -n "$IMAP_PID" ]] && kill "$IMAP_PID"
    [[ -n "$RESPONDERS" ]] && kill $RESPONDERS
    stop_daemon
    sleep 0.5
    ip netns del cgA
    ip netns del cgB
}

# failover_setup: the nodes, dovecot on A, the responders.
failover_setup() {
    command -v keepalived >/dev/null && command -v dovecot >/dev/null ||
        fail "keepalived and dovecot are needed (cargo xtask setup installs them)"
    chmod 755 "$T" # dovecot's auth and mail processes run as other users
    ip netns add cgA
    ip netns add cgB
    ip link add cg-va type veth peer name cg-vb
    ip link set cg-va netns cgA
    ip link set cg-vb netns cgB
    ip -n cgA addr add "$A_IP/24" dev cg-va
    ip -n cgB addr add "$B_IP/24" dev cg-vb
    ip -n cgA link set lo up
    ip -n cgB link set lo up
    ip -n cgA link set cg-va up
    ip -n cgB link set cg-vb up

    mkdir -p "$T/dovecot/run" "$T/dovecot/state" "$T/mail"
    chmod 777 "$T/mail"
    echo "u1:{PLAIN}pw1:65534:65534::$T/mail/u1" >"$T/dovecot/passwd"
    cat >"$T/dovecot/dovecot.conf" <<CONF
protocols = imap
listen = $A_IP
base_dir = $T/dovecot/run
state_dir = $T/dovecot/state
log_path = $T/dovecot/dovecot.log
CONF
    dovecot_test_auth "$T/dovecot/passwd" >>"$T/dovecot/dovecot.conf"
    ip netns exec cgA dovecot -c "$T/dovecot/dovecot.conf" || fail "dovecot did not start"

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
}

# failover_config FILE [LINE...]: clockguard's configuration with dovecot on A as the
# tracked service (a 500 ms probe of the IMAP greeting with a 4 s timeout, fall 2, rise 3,
# hold 2 s, a 30 s jump window, the track file), and LINEs added to its [[service]] table.
# The timeout outlasts dovecot's own pause after a small backward step (every process
# sleeps until the clock is back where it was: 3 s for a 3 s step), which is no fault;
# with 1 s, two probes that fell into the pause had failed the service (seen once in CI).
failover_config() {
    local file=$1
    shift
    cat >"$file" <<CONF
mode = "observe"
[[service]]
name = "dovecot"
pidfile = "$T/dovecot/run/master.pid"
probe = "$A_IP:143"
probe_expect = "* OK"
interval_ms = 500
probe_timeout_ms = 4000
fall = 2
rise = 3
hold_s = 2
jump_window_s = 30
track_file = "$T/track/dovecot"
CONF
    if [[ $# -gt 0 ]]; then printf '%s\n' "$@" >>"$file"; fi
}

# start_keepalived NODE PRIORITY [DEFINITION USE]: DEFINITION is top-level keepalived
# configuration (a vrrp_track_file or vrrp_script block), USE what the instance says to
# follow it (a track_file or track_script block).
start_keepalived() {
    local name=$1 priority=$2 definition=${3:-} use=${4:-}
    local me peer dev
    if [[ $name == A ]]; then me=$A_IP peer=$B_IP dev=cg-va; else me=$B_IP peer=$A_IP dev=cg-vb; fi
    mkdir -p "$T/ka$name"
    cat >"$T/ka$name/keepalived.conf" <<CONF
global_defs {
    router_id node$name
    script_user root
    enable_script_security
}
$definition
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
    $use
}
CONF
    ip netns exec "cg$name" keepalived -n -l -D -f "$T/ka$name/keepalived.conf" \
        -p "$T/ka$name/keepalived.pid" -r "$T/ka$name/vrrp.pid" -c "$T/ka$name/checkers.pid" \
        >"$T/ka$name/log" 2>&1 &
}

# (No `| grep -q`: with pipefail, grep closing the pipe early fails the pipeline.)
vip_on() { [[ $(ip -n "cg$1" -o addr show) == *" $VIP/"* ]]; }
# Asks the VIP from node A: "A" while A holds it, "B" once it moved.
who_answers() { ip netns exec cgA timeout 0.5 bash -c "exec 3<>/dev/tcp/$VIP/8077 && head -n 1 <&3" 2>/dev/null; }

# wait_vip NODE SECONDS: until the VIP answers on NODE (and only there). Bounded by time,
# not by tries: a slow emulator makes each try slower, and the suite's timeout would end
# the test before it could say what went wrong.
wait_vip() {
    local node=$1 deadline=$(( SECONDS + $2 ))
    while (( SECONDS < deadline )); do
        [[ $(who_answers) == "$node" ]] && return 0
        sleep 0.1
    done
    return 1
}

# imap_login: a logged-in IMAP session on A (imap_session in tests/dovecot_lib.sh: commands
# written to fd 8 go to the server, answers land in $T/imap.out); sets WORKER to the pid of
# its imap process.
imap_login() {
    local status=0
    imap_session "$T" "$A_IP" ip netns exec cgA || status=$?
    case $status in
        0) ;;
        1) fail "IMAP login failed: $(cat "$T/imap.out"; tail -n 5 "$T/dovecot/dovecot.log")" ;;
        *) fail "no new imap worker after the login" ;;
    esac
}
