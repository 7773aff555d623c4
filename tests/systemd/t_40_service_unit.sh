# `[[service]] unit = "dovecot.service"` under a real systemd: clockguard finds dovecot's
# master and its workers by the unit's cgroup (no pidfile, exe or comm given). A 10 s
# backward step by an allowed executable makes the logged-in imap worker kill itself
# ("Time just moved backwards"), and the chain is journaled: the step, who made it, the
# death and its exit status, the unit, in clockguard's journal and in journald.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/../dovecot_lib.sh"
ensure_installed
DOVECOT_DROPIN=/etc/dovecot/conf.d/99-cg-test.conf
cp "$CONF" "$CG_TEST_TMP/clockguard.toml.orig"
cleanup() {
    { exec 8>&-; } 2>/dev/null || true
    # (|| true: the session may have ended with its worker; under set -e a failing last
    # command of an && list ends the trap, and the test, with status 1.)
    [[ -z "$IMAP_PID" ]] || kill "$IMAP_PID" 2>/dev/null || true
    rm -f "$DOVECOT_DROPIN" /etc/dovecot/cg-users
    cp "$CG_TEST_TMP/clockguard.toml.orig" "$CONF"
    systemctl restart dovecot clockguard || true
}
trap cleanup EXIT

# dovecot as packaged, plus one plain-text user for the test.
mkdir -p /var/mail/cg && chmod 777 /var/mail/cg
echo "u1:{PLAIN}pw1:65534:65534::/var/mail/cg/u1" >/etc/dovecot/cg-users
dovecot_test_auth /etc/dovecot/cg-users >"$DOVECOT_DROPIN"
systemctl restart dovecot
[[ $(systemctl is-active dovecot) == active ]] || fail "dovecot.service is not active"

# Observe mode: date may step the clock; dovecot tracked by its unit only.
cat >>"$CONF" <<'CONF'

[[service]]
name = "dovecot"
unit = "dovecot.service"
probe = "127.0.0.1:143"
probe_expect = "* OK"
interval_ms = 500
probe_timeout_ms = 4000
jump_window_s = 30
hold_s = 2
CONF
systemctl restart clockguard
wait_active
service() { clockguard status --json | jq -c '.services[] | select(.name == "dovecot")'; }
for _ in $(seq 1 100); do [[ $(service | jq -r .state) == healthy ]] && break; sleep 0.1; done
[[ $(service | jq -r .state) == healthy ]] || fail "dovecot is not healthy: $(service)"

# A logged-in IMAP session: commands written to fd 8, answers in imap.out.
T=$CG_TEST_TMP
status=0
imap_session "$T" 127.0.0.1 || status=$?
case $status in
    0) ;;
    1) fail "IMAP login failed: $(cat "$T/imap.out"; journalctl -u dovecot -n 5 --no-pager)" ;;
    *) fail "no imap worker after the login" ;;
esac
worker=$WORKER
grep -q '/system.slice/dovecot.service' "/proc/$worker/cgroup" || fail "the worker is not in dovecot.service: $(cat "/proc/$worker/cgroup")"
echo "imap worker: pid $worker, $(cat "/proc/$worker/cgroup")"
n=$(service | jq '.processes // empty')
echo "dovecot processes clockguard tracks: ${n:-?}"

# The worker measures the jump from its last wake-up (it sleeps off 5 s or less): wake it
# right before the step, and again after it.
echo 'b NOOP' >&8
for _ in $(seq 1 100); do grep -q '^b OK' "$T/imap.out" && break; sleep 0.05; done
date -s '-10 sec' >/dev/null
echo 'c NOOP' >&8
for _ in $(seq 1 100); do kill -0 "$worker" 2>/dev/null || break; sleep 0.1; done
kill -0 "$worker" 2>/dev/null && fail "the imap worker is alive after the 10 s step"
journalctl -u dovecot --no-pager | grep 'Time just moved backwards' | tail -n 2

for _ in $(seq 1 100); do
    died=$(clockguard audit --json | jq -c "select(.kind == \"died_from_time_jump\" and .pid == $worker)")
    [[ -n "$died" ]] && break
    sleep 0.1
done
[[ -n "$died" ]] || fail "no died_from_time_jump record for $worker: $(clockguard audit --json | tail -n 3)"
echo "death: $died"
jq -e '.comm == "imap" and .result == "exit 89" and .cause == "step" and .verdict == "fault"
    and .detail.service == "dovecot" and .detail.jump.comm == "date" and .unit == "dovecot.service"' \
    <<<"$died" >/dev/null || fail "the record does not carry the chain and the unit: $died"
wait_entries 1 CLOCKGUARD_KIND=died_from_time_jump CLOCKGUARD_UNIT=dovecot.service
entries CLOCKGUARD_KIND=died_from_time_jump | tail -n 1 | jq -c '{MESSAGE, PRIORITY, CLOCKGUARD_UNIT}'
