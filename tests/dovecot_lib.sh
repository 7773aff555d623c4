# dovecot with one plain-text test user, and a logged-in IMAP session whose imap worker kills
# itself when time moves backwards by more than 5 s. Sourced by tests/vm/failover_lib.sh
# (dovecot in a network namespace, everything under the test's directory) and by
# tests/systemd/t_40_service_unit.sh (Debian's dovecot.service, a conf.d drop-in).
IMAP_PID=""

# dovecot_test_auth PASSWD: dovecot settings for plain-text logins (no TLS) of the users in
# the passwd-file PASSWD ("u1:{PLAIN}pw1:UID:GID::HOME").
dovecot_test_auth() {
    cat <<CONF
ssl = no
disable_plaintext_auth = no
mail_location = maildir:~/Maildir
first_valid_uid = 1
passdb {
  driver = passwd-file
  args = $1
}
userdb {
  driver = passwd-file
  args = $1
}
CONF
}

# imap_session DIR ADDR [WRAPPER...]: logs in as u1 (password pw1) at ADDR:143, the session
# run under WRAPPER (e.g. ip netns exec cgA). Commands written to fd 8 go to the server,
# answers land in DIR/imap.out; IMAP_PID is the session, WORKER the pid of the imap process
# the login started. A session already open is closed first. Status 1: the login was not
# answered within 15 s; 2: no new imap process appeared. The caller says why, with its logs.
imap_session() {
    local dir=$1 addr=$2
    shift 2
    [[ -z "$IMAP_PID" ]] || { exec 8>&-; kill "$IMAP_PID" 2>/dev/null || true; }
    local before pid
    before=$(pgrep -x imap | tr "\n" " " || true)
    rm -f "$dir/imap.in" "$dir/imap.out"
    mkfifo "$dir/imap.in"
    "$@" bash -c "exec 3<>/dev/tcp/$addr/143 || exit 1
        cat <&3 >'$dir/imap.out' &
        printf 'a LOGIN u1 pw1\r\n' >&3
        while read -r line; do printf '%s\r\n' \"\$line\" >&3; done <'$dir/imap.in'" &
    IMAP_PID=$!
    # Read-write: opening a FIFO so never blocks, even when the session failed to connect.
    exec 8<>"$dir/imap.in"
    WORKER=""
    for _ in $(seq 1 150); do grep -q '^a OK' "$dir/imap.out" 2>/dev/null && break; sleep 0.1; done
    grep -q '^a OK' "$dir/imap.out" || return 1
    for pid in $(pgrep -x imap); do
        [[ " $before " == *" $pid "* ]] || WORKER=$pid
    done
    [[ -n "$WORKER" ]] || return 2
}
