# An upgrade as apt makes it, to a newer version of the package (the one under test,
# repacked with a higher version and one more line in its default configuration), over
# an installed one whose configuration the operator edited (guard mode):
# - dpkg keeps the operator's file (--force-confold, as unattended-upgrades does) and puts
#   the new default beside it (.dpkg-dist);
# - the daemon is restarted into the new version with no moment unguarded: a raw
#   clock_settime every 50 ms through the whole upgrade is refused every time, because
#   the old daemon leaves its pinned guard to the new one on a restart;
# - every record from before the upgrade is still in the journal, and the chain verifies.
# Then an upgrade over a file the new version refuses: the running daemon is not restarted
# (a restart would stop it and start none), apt's output says why, the guard stays, and
# `systemctl restart` fails with the file, line and key in journalctl -u clockguard.
source "$(dirname "$0")/lib.sh"
ensure_installed
cp "$CONF" "$CG_TEST_TMP/clockguard.toml.orig"
cleanup() {
    touch "$CG_TEST_TMP/stepper.stop"
    cp "$CG_TEST_TMP/clockguard.toml.orig" "$CONF"
    rm -f "$CONF.dpkg-dist" "$CONF.dpkg-old"
    systemctl reset-failed clockguard 2>/dev/null || true
    systemctl restart clockguard || true
}
trap cleanup EXIT

# repack VERSION: the package under test as VERSION, its default configuration with one
# more comment line (a maintainer's change: dpkg then sees both sides changed).
repack() {
    local dir="$CG_TEST_TMP/pkg-$1"
    dpkg-deb -R "$DEB" "$dir"
    sed -i "s/^Version: .*/Version: $1/" "$dir/DEBIAN/control"
    echo "# (a line the maintainer added in $1)" >>"$dir/etc/clockguard/clockguard.toml"
    dpkg-deb -b --root-owner-group "$dir" "$CG_TEST_TMP/clockguard_$1_amd64.deb" >/dev/null
    echo "$CG_TEST_TMP/clockguard_$1_amd64.deb"
}
# upgrade DEB: apt's non-interactive upgrade, keeping the operator's configuration.
upgrade() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$1" \
        >"$CG_TEST_TMP/upgrade.log" 2>&1 || { cat "$CG_TEST_TMP/upgrade.log"; fail "apt-get install $1 failed"; }
}
version() { dpkg-query -W -f='${Version}' clockguard; }

from=$(version)
second=$(repack "$from+up1")
third=$(repack "$from+up2")

set_mode guard
systemctl restart clockguard
wait_active
clockguard status --json | jq -e '.enforcement.active and .enforcement.pinned != null' >/dev/null ||
    fail "the guard is not pinned: $(clockguard status --json | jq -c .enforcement)"
old_pid=$(main_pid)
clockguard audit --json >"$CG_TEST_TMP/before.jsonl"

# A raw clock_settime every 50 ms until told to stop; each outcome on a line.
(
    while [[ ! -e "$CG_TEST_TMP/stepper.stop" ]]; do
        if "$CALL" settime-by 3000000000 >/dev/null 2>&1; then echo stepped; else echo refused; fi
        sleep 0.05
    done
) >"$CG_TEST_TMP/stepper.out" &
stepper=$!
sleep 0.5
upgrade "$second"
# Until the new daemon is ready (apt returns once systemctl restart has).
wait_active
sleep 0.5
touch "$CG_TEST_TMP/stepper.stop"
wait "$stepper" || true
attempts=$(wc -l <"$CG_TEST_TMP/stepper.out")
stepped=$(grep -c '^stepped' "$CG_TEST_TMP/stepper.out" || true)
echo "upgrade $from -> $(version): pid $old_pid -> $(main_pid); $attempts clock_settime calls during it, $stepped went through"
# What the daemons journaled around the restart: the old one's stop, the new one's start.
clockguard audit --json | jq -c 'select(.source == "daemon" and (.kind == "stop" or .kind == "start")) | {seq, time, kind, detail}' | tail -n 2
[[ $(version) == "$from+up1" ]] || fail "the installed version is $(version), not $from+up1"
[[ $(main_pid) != "$old_pid" ]] || fail "the daemon was not restarted by the upgrade (pid $old_pid)"
(( attempts >= 10 )) || fail "only $attempts clock_settime calls were made during the upgrade"
if (( stepped > 0 )); then
    journalctl -b --no-pager -o short-monotonic --since "-5 min" | grep -vE 'clock step|apt-get|dpkg' | tail -n 60
    fail "$stepped of $attempts clock_settime calls went through during the upgrade"
fi

# The operator's file is kept, the new default is beside it.
grep -q '^mode = "guard"' "$CONF" || fail "the upgrade replaced the operator's configuration"
[[ -f "$CONF.dpkg-dist" ]] && grep -q "the maintainer added in $from+up1" "$CONF.dpkg-dist" ||
    fail "no new default beside the kept file: $(ls /etc/clockguard)"
# The old daemon left its guard to the new one, which adopted it.
stop=$(clockguard audit --json | jq -c 'select(.source == "daemon" and .kind == "stop")' | tail -n 1)
echo "stop: $stop"
jq -e '.detail.restarting == true and .detail.guard_released == false' <<<"$stop" >/dev/null ||
    fail "the old daemon did not leave its guard for the restart: $stop"
clockguard status --json | jq -e '.enforcement.active and ([.hooks[] | select(.adopted)] | length) > 0' >/dev/null ||
    fail "the new daemon did not adopt the guard: $(clockguard status --json | jq -c '{enforcement, adopted: [.hooks[] | select(.adopted) | .name]}')"
# Nothing recorded is lost: every record from before, as it was, and the chain verifies.
clockguard audit --json >"$CG_TEST_TMP/after.jsonl"
head -n "$(wc -l <"$CG_TEST_TMP/before.jsonl")" "$CG_TEST_TMP/after.jsonl" | cmp -s - "$CG_TEST_TMP/before.jsonl" ||
    fail "the records from before the upgrade changed"
clockguard audit --verify || fail "the journal does not verify after the upgrade"
denied=$(clockguard audit --json | jq -s '[.[] | select(.verdict == "denied" and .comm == "cg-clockcall")] | length')
echo "refused steps journaled: $denied"
(( denied >= 1 )) || fail "no refused clock_settime journaled"

# An upgrade over a file the new version refuses (a value of the wrong type on line 4).
pid=$(main_pid)
printf 'mode = "guard"\n[guard]\nallow = []\nmax_slew_ppm = "fast"\n' >"$CONF"
upgrade "$third"
echo "apt said: $(grep clockguard: "$CG_TEST_TMP/upgrade.log")"
grep -qF "not restarted: $CONF: line 4, column 16: guard.max_slew_ppm" "$CG_TEST_TMP/upgrade.log" &&
    grep -qF "the running daemon goes on" "$CG_TEST_TMP/upgrade.log" ||
    fail "the upgrade did not say why it did not restart: $(tail -n 5 "$CG_TEST_TMP/upgrade.log")"
[[ $(version) == "$from+up2" ]] || fail "the installed version is $(version), not $from+up2"
[[ $(main_pid) == "$pid" && $(systemctl is-active clockguard) == active ]] ||
    fail "the running daemon did not go on (pid $pid, now $(main_pid), $(systemctl is-active clockguard))"
expect_refused "date -s after the upgrade" date -s '+5 sec'
if systemctl restart clockguard 2>/dev/null; then fail "restart succeeded with a broken file"; fi
sleep 1
journalctl -b -u clockguard --no-pager -n 30 -o cat | grep -F "$CONF: line 4, column 16: guard.max_slew_ppm" ||
    fail "journalctl -u clockguard does not name the file, line and key"
# With no daemon, the guard it left in force still refuses steps.
expect_refused "date -s with no daemon" date -s '+5 sec'
