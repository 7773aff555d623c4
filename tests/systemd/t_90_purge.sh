# Stopping and purging: `systemctl stop` releases the pinned guard (the clock may be set
# again); `apt purge` leaves no process, no pin in bpffs, no unit, no configuration and no
# state.
source "$(dirname "$0")/lib.sh"
ensure_installed
set_mode guard
systemctl restart clockguard
wait_active
[[ -d "$PINS" ]] || fail "guard mode pinned nothing in $PINS"
expect_refused "date -s in guard mode" date -s '+2 sec'
systemctl stop clockguard
# (the empty $PINS itself may stay: the next daemon pins its guard under it)
[[ -n $(find "$PINS" -mindepth 1 2>/dev/null) ]] && fail "systemctl stop left the guard pinned: $(find "$PINS" | head)"
date -s '-2 sec' >/dev/null || fail "the clock cannot be set after systemctl stop"

DEBIAN_FRONTEND=noninteractive apt-get purge -y -q clockguard >"$CG_TEST_TMP/purge.log" 2>&1 ||
    { cat "$CG_TEST_TMP/purge.log"; fail "apt-get purge failed"; }
pgrep -x clockguard && fail "a clockguard process is left"
[[ -e "$PINS" ]] && fail "a pin is left in $PINS"
systemctl cat clockguard >/dev/null 2>&1 && fail "the unit is still known to systemd"
for p in /etc/clockguard /var/lib/clockguard /lib/systemd/system/clockguard.service \
    /etc/systemd/system/multi-user.target.wants/clockguard.service /usr/sbin/clockguard; do
    [[ -e "$p" ]] && fail "$p is left after purge"
done
echo "purged: no process, no pin, no unit, no configuration, no state"
