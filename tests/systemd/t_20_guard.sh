# Guard mode on a real systemd: the operator switches the installed configuration to guard
# and restarts the unit; `date -s` is refused, and `journalctl -u clockguard
# CLOCKGUARD_VERDICT=denied` finds it, explained by the shipped catalog (journalctl -x).
# `systemctl reload` applies a guard policy change at once and journals it. A broken
# configuration: reload keeps the running daemon and its configuration, restart fails with
# the file, line and key in journalctl -u clockguard; nothing recorded is lost.
source "$(dirname "$0")/lib.sh"
ensure_installed
cp "$CONF" "$CG_TEST_TMP/clockguard.toml.orig"
# The clock goes back to observe mode and the file to the package's, whatever happens.
trap 'cp "$CG_TEST_TMP/clockguard.toml.orig" "$CONF"; systemctl restart clockguard || true' EXIT

set_mode guard
systemctl restart clockguard
wait_active
clockguard status --json | jq -e '.mode == "guard" and .enforcement.active' >/dev/null ||
    fail "not enforcing: $(clockguard status --json | jq -c '{mode, enforcement}')"

expect_refused "date -s" date -s '+5 sec'
wait_entries 1 CLOCKGUARD_VERDICT=denied
denied=$(entries CLOCKGUARD_VERDICT=denied | tail -n 1)
echo "denied: $(jq -c '{MESSAGE, PRIORITY, CLOCKGUARD_COMM, CLOCKGUARD_EXE, CLOCKGUARD_REQUESTED_DELTA_NS, CLOCKGUARD_RESULT}' <<<"$denied")"
jq -e '.CLOCKGUARD_COMM == "date" and .CLOCKGUARD_EXE == "/usr/bin/date" and .CLOCKGUARD_RESULT == "EPERM"
    and .PRIORITY == "4" and .CLOCKGUARD_KIND == "step"
    and (.CLOCKGUARD_REQUESTED_DELTA_NS | tonumber) > 4000000000' <<<"$denied" >/dev/null ||
    fail "the refused step's entry: $denied"
# The same record in clockguard's own hash-chained journal.
rec=$(record "$(jq -r .CLOCKGUARD_SEQ <<<"$denied")")
jq -e --arg h "$(jq -r .CLOCKGUARD_HASH <<<"$denied")" '.verdict == "denied" and .hash == $h' <<<"$rec" >/dev/null ||
    fail "the record does not match the journald entry: $rec"
# journalctl -x explains it from the catalog the package installed.
journalctl -b -u clockguard -x --no-pager CLOCKGUARD_VERDICT=denied | grep 'Subject: The system clock was stepped, or a step was refused' >/dev/null ||
    fail "journalctl -x shows no catalog text: $(journalctl -b -u clockguard -x --no-pager CLOCKGUARD_VERDICT=denied | tail -n 5)"

# A guard policy change by reload: date may now step; the reload is journaled.
pid=$(main_pid)
sed -i 's|^allow = \[\]|allow = ["/usr/bin/date"]|' "$CONF"
systemctl reload clockguard
wait_entries 1 CLOCKGUARD_SOURCE=daemon CLOCKGUARD_KIND=reload
reload=$(entries CLOCKGUARD_SOURCE=daemon CLOCKGUARD_KIND=reload | tail -n 1)
echo "reload: $(jq -r .MESSAGE <<<"$reload")"
[[ $(main_pid) == "$pid" ]] || fail "reload restarted the daemon"
rec=$(record "$(jq -r .CLOCKGUARD_SEQ <<<"$reload")")
jq -e '.detail.applied | length > 0' <<<"$rec" >/dev/null || fail "the reload record applies nothing: $rec"
date -s '-5 sec' >/dev/null || fail "date -s refused after allow = [\"/usr/bin/date\"] and a reload"
wait_entries 1 CLOCKGUARD_VERDICT=allowed CLOCKGUARD_COMM=date

# A broken file: reload refuses it and keeps the daemon and the policy in use.
records_before=$(clockguard audit --json | wc -l)
# (a value of the wrong type on line 4)
printf 'mode = "guard"\n[guard]\nallow = ["/usr/bin/date"]\nmax_slew_ppm = "fast"\n' >"$CONF"
if clockguard reload >"$CG_TEST_TMP/reload.out" 2>&1; then fail "clockguard reload took a broken file"; fi
echo "clockguard reload: $(cat "$CG_TEST_TMP/reload.out")"
grep -qF "$CONF: line 4, column 16: guard.max_slew_ppm" "$CG_TEST_TMP/reload.out" ||
    fail "the reload error does not name the file, line and key"
systemctl reload clockguard || true
sleep 1
[[ $(main_pid) == "$pid" && $(systemctl is-active clockguard) == active ]] || fail "a broken file stopped the daemon on reload"
date -s '+5 sec' >/dev/null || fail "the policy in use was lost on a broken reload"
# restart: the new daemon refuses to start and says where.
if systemctl restart clockguard 2>/dev/null; then fail "restart succeeded with a broken file"; fi
sleep 1
journalctl -b -u clockguard --no-pager -n 30 -o cat | grep -F "$CONF: line 4, column 16: guard.max_slew_ppm" ||
    fail "journalctl -u clockguard does not name the file, line and key"
# Nothing recorded is lost: the journal verifies and holds every record from before.
cp "$CG_TEST_TMP/clockguard.toml.orig" "$CONF"
systemctl reset-failed clockguard || true
systemctl restart clockguard
wait_active
clockguard audit --verify || fail "the journal does not verify after the failed restart"
(( $(clockguard audit --json | wc -l) > records_before )) || fail "records lost across the failed restart"
