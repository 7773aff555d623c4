# An event storm: 100,000 clock syscalls end with journal count + drop counter = 100,000.
# Memory does not grow with the event count: each storm leaves the daemon's RSS where it
# started, within 2 MiB (the daemon gives a burst's freed heap back once it is over, and
# keeps transparent huge pages off its heap: THP "always" in this VM's kernel had added
# 4 MB a few seconds after a storm).
source "$(dirname "$0")/lib.sh"
start_daemon
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$DAEMON_PID/status"; }

# storm: 100,000 calls, then wait until the journal stops growing; sets n and drops.
storm() {
    local out pid prev=-1
    out=$("$CALL" storm 100000)
    echo "$out"
    pid=$(echo "$out" | jq .pid)
    [[ $(echo "$out" | jq .einval) -eq 100000 ]] || fail "the storm's calls were not all EINVAL: $out"
    for _ in $(seq 1 120); do
        n=$(audit_json | jq -c --argjson p "$pid" 'select(.pid == $p)' | wc -l)
        [[ "$n" -eq "$prev" ]] && break
        prev=$n
        sleep 1
    done
    drops=$(( $(status_json | jq .ring_buffer_drops) - drops_before ))
    [[ $(( n + drops )) -eq 100000 ]] || fail "journal $n + drops $drops != 100000"
    # The daemon gives a burst's freed heap back once a sample interval (1 s) passed
    # without records.
    sleep 2.5
}

rss_start=$(rss)
drops_before=0
storm
rss_first=$(rss)
echo "METRIC storm journaled=$n drops=$drops rss_start_kb=$rss_start rss_after_first_kb=$rss_first"
drops_before=$(status_json | jq .ring_buffer_drops)
storm
rss_second=$(rss)
echo "METRIC storm-2 journaled=$n drops=$drops rss_after_second_kb=$rss_second"
# Allocator slack, not growth with the event count.
[[ "$rss_first" -le $(( rss_start + 2048 )) ]] || fail "the first storm took RSS from $rss_start kB to $rss_first kB"
[[ "$rss_second" -le $(( rss_start + 2048 )) ]] || fail "the second storm took RSS from $rss_start kB to $rss_second kB"
echo ok
