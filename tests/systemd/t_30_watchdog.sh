# The systemd watchdog (WatchdogSec, short in a drop-in for the test): a daemon frozen with
# SIGSTOP sends no WATCHDOG=1; systemd kills it and starts it again (Restart=always). The
# guard is pinned in bpffs, so clock steps made while the daemon is frozen and while it
# restarts are refused all the same; the new daemon adopts the pinned guard and journals
# them, read from the pinned ring buffer.
source "$(dirname "$0")/lib.sh"
ensure_installed
DROPIN=/etc/systemd/system/clockguard.service.d/cg-test-watchdog.conf
cp "$CONF" "$CG_TEST_TMP/clockguard.toml.orig"
cleanup() {
    rm -f "$DROPIN"
    cp "$CG_TEST_TMP/clockguard.toml.orig" "$CONF"
    systemctl daemon-reload || true
    systemctl restart clockguard || true
}
trap cleanup EXIT

mkdir -p "$(dirname "$DROPIN")"
printf '[Service]\nWatchdogSec=4s\n' >"$DROPIN"
systemctl daemon-reload
set_mode guard
systemctl restart clockguard
wait_active
[[ $(systemctl show -p WatchdogUSec --value clockguard) == 4s ]] ||
    fail "the drop-in's WatchdogSec is not in effect: $(systemctl show -p WatchdogUSec --value clockguard)"
clockguard status --json | jq -e '.enforcement.active and .enforcement.pinned != null' >/dev/null ||
    fail "the guard is not pinned: $(clockguard status --json | jq -c .enforcement)"
restarts_before=$(systemctl show -p NRestarts --value clockguard)
frozen=$(main_pid)
kill -STOP "$frozen"
frozen_at=$(date +%s)
expect_refused "date -s while frozen" date -s '+7 sec'

# Until systemd has replaced the frozen daemon, a raw clock_settime every 0.2 s: each one
# must be refused, through the kill and the new daemon's start.
attempts=0
new=""
for _ in $(seq 1 300); do
    attempts=$(( attempts + 1 ))
    if "$CALL" settime-by 3000000000 >/dev/null 2>&1; then
        fail "a clock_settime went through at attempt $attempts (daemon $(main_pid), state $(systemctl is-active clockguard))"
    fi
    new=$(main_pid)
    if [[ "$new" != 0 && "$new" != "$frozen" && $(systemctl is-active clockguard) == active ]]; then break; fi
    sleep 0.2
done
[[ "$new" != 0 && "$new" != "$frozen" ]] || fail "systemd did not replace the frozen daemon within 60 s"
echo "replaced pid $frozen by $new after $(( $(date +%s) - frozen_at )) s; $attempts clock_settime calls refused meanwhile"
(( $(systemctl show -p NRestarts --value clockguard) > restarts_before )) || fail "NRestarts did not grow"
journalctl -b -u clockguard --no-pager -o cat | grep -i 'watchdog timeout' ||
    fail "systemd did not log a watchdog timeout"
kill -0 "$frozen" 2>/dev/null && fail "the frozen daemon $frozen is still there"

clockguard status --json | jq -e '.enforcement.active and ([.hooks[] | select(.adopted)] | length) > 0' >/dev/null ||
    fail "the new daemon did not adopt the pinned guard: $(clockguard status --json | jq -c '[.hooks[] | {name, adopted, attached}]')"
for _ in $(seq 1 100); do
    clockguard audit --json | jq -e -s 'any(.comm == "date" and .verdict == "denied" and .requested_delta_ns > 6000000000)' >/dev/null && break
    sleep 0.1
done
clockguard audit --json | jq -c -s '[.[] | select(.verdict == "denied")] | length as $n | {denied: $n}'
clockguard audit --json | jq -e -s 'any(.comm == "date" and .verdict == "denied" and .requested_delta_ns > 6000000000)' >/dev/null ||
    fail "the step refused while frozen is not journaled"
clockguard audit --json | jq -e -s 'any(.source == "daemon" and .kind == "start" and .detail.previous_stop == "unclean")' >/dev/null ||
    fail "the new daemon's start record does not say the previous run ended uncleanly"
clockguard audit --verify || fail "the journal does not verify across the watchdog kill"
