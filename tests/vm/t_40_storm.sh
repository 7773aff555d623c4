# An event storm: 100,000 clock syscalls end with journal count + drop counter = 100,000,
# and the daemon's RSS back where it started.
source "$(dirname "$0")/lib.sh"
start_daemon
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$DAEMON_PID/status"; }
rss_before=$(rss)
out=$("$CALL" storm 100000)
echo "$out"
pid=$(echo "$out" | jq .pid)
[[ $(echo "$out" | jq .einval) -eq 100000 ]] || fail "the storm's calls were not all EINVAL: $out"
# Wait until the journal stops growing.
prev=-1
for _ in $(seq 1 120); do
    n=$(audit_json | jq -c --argjson p "$pid" 'select(.pid == $p)' | wc -l)
    [[ "$n" -eq "$prev" ]] && break
    prev=$n
    sleep 1
done
drops=$(status_json | jq .ring_buffer_drops)
rss_after=$(rss)
echo "METRIC storm journaled=$n drops=$drops rss_before_kb=$rss_before rss_after_kb=$rss_after"
[[ $(( n + drops )) -eq 100000 ]] || fail "journal $n + drops $drops != 100000"
# Back where it started: allow allocator slack, not growth with the event count.
[[ "$rss_after" -le $(( rss_before + 4096 )) ]] || fail "RSS grew from $rss_before kB to $rss_after kB"
echo ok
