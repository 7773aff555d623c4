# Sourced in the test VM before each command (xtask/src/vm.rs, GUEST_PRELUDE says why):
# two probes kept on each hot tracepoint clockguard hooks, with tracing off and tiny
# buffers, so that attaching or detaching its programs patches no kernel text under TCG.
t=/sys/kernel/tracing
mountpoint -q $t || mount -t tracefs nodev $t 2>/dev/null
mkdir -p $t/instances/cg_hold 2>/dev/null
for i in $t $t/instances/cg_hold; do
    echo 0 >$i/tracing_on 2>/dev/null
    echo 4 >$i/buffer_size_kb 2>/dev/null
    for e in timer/hrtimer_expire_entry sched/sched_process_fork sched/sched_process_exec \
        sched/sched_process_exit; do
        echo 1 >$i/events/$e/enable 2>/dev/null ||
            echo "vm: cannot keep tracepoint $e enabled in $i" >&2
    done
done
