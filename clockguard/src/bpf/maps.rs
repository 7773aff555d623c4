//! The daemon's side of the eBPF maps: the ring buffers it takes and polls, the counters,
//! histograms and costs it reads, the tracked processes and repeat counts it updates, and
//! the stack traces it symbolises.

use super::*;

impl Probes {
    /// The ring buffer of events, taken out of the object (the daemon polls it).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        let map = self.ebpf.take_map("EVENTS").context("no EVENTS map")?;
        Ok(RingBuf::try_from(map)?)
    }

    /// Runs and total run time of each attached program, as the kernel counts them while
    /// statistics are enabled (BPF_ENABLE_STATS); zero otherwise.
    pub fn hook_costs(&self) -> Vec<HookCost> {
        self.ebpf
            .programs()
            .filter(|(name, _)| self.hooks.iter().any(|h| h.name == *name && h.attached))
            .filter_map(|(name, prog)| {
                let info = prog.info().ok()?;
                let runs = info.run_count();
                let run_time_ns = info.run_time().as_nanos() as u64;
                Some(HookCost {
                    name: name.to_string(),
                    runs,
                    run_time_ns,
                    ns_per_run: (runs > 0).then(|| run_time_ns as f64 / runs as f64),
                })
            })
            .collect()
    }

    /// Runs of each attached program that the kernel skipped because the program was
    /// already running on that CPU (its per-CPU recursion guard), by hook name; only hooks
    /// with misses. On a preemptible kernel (7.2's default, `preempt=full`), a task
    /// preempted inside a program holds that guard until it runs again, and every other
    /// task on the CPU passes the hook unseen meanwhile. The kernel counts these
    /// (`bpf_prog_info.recursion_misses`); they are events lost before any map or ring
    /// buffer of ours. LSM programs have no such guard: the guard never skips a decision.
    pub fn hook_misses(&self) -> std::collections::BTreeMap<String, u64> {
        self.ebpf
            .programs()
            .filter(|(name, _)| self.hooks.iter().any(|h| h.name == *name && h.attached))
            .filter_map(|(name, prog)| {
                let misses =
                    clockguard_sys::bpf_recursion_misses(std::os::fd::AsFd::as_fd(prog.fd().ok()?))
                        .ok()?;
                (misses > 0).then(|| (name.to_string(), misses))
            })
            .collect()
    }

    /// The ring buffer of late hrtimer expiries, taken out of the object.
    pub fn take_timer_events(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map("TIMER_EVENTS")
            .context("no TIMER_EVENTS map")?;
        Ok(RingBuf::try_from(map)?)
    }

    /// The ring buffer of tracked services' exits, taken out of the object.
    pub fn take_service_events(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map("SERVICE_EVENTS")
            .context("no SERVICE_EVENTS map")?;
        Ok(RingBuf::try_from(map)?)
    }

    /// Brings the kernel's TRACKED map (tgid → service index) in line with a scan of /proc:
    /// adds what the scan matched, and removes the processes that no longer exist (an exit
    /// missed while nothing was attached). Entries the kernel added at fork since the scan
    /// are kept. Returns how many processes the kernel tracks.
    pub fn sync_tracked(&mut self, matched: &std::collections::HashMap<u32, u32>) -> Result<usize> {
        let mut tracked: HashMap<_, u32, u32> =
            HashMap::try_from(self.ebpf.map_mut("TRACKED").context("no TRACKED map")?)?;
        let present: Vec<(u32, u32)> = tracked.iter().filter_map(Result::ok).collect();
        for (pid, _) in &present {
            if !matched.contains_key(pid) && !Path::new(&format!("/proc/{pid}")).exists() {
                // Gone: an exit missed while the hook was not attached.
                tracked.remove(pid).ok();
            }
        }
        for (pid, service) in matched {
            if !present.contains(&(*pid, *service)) {
                tracked
                    .insert(pid, service, 0)
                    .with_context(|| format!("cannot track pid {pid}"))?;
            }
        }
        Ok(tracked.keys().filter(Result::is_ok).count())
    }

    /// The hrtimer lateness histogram, summed over CPUs.
    pub fn lateness_histogram(&self) -> Result<abi::LatenessHistogram> {
        let map: PerCpuArray<_, abi::LatenessHistogram> =
            PerCpuArray::try_from(self.ebpf.map("LATENESS").context("no LATENESS map")?)?;
        let mut total = abi::LatenessHistogram {
            buckets: [0; abi::LATENESS_BUCKETS as usize],
            sum_ns: 0,
        };
        for cpu in map.get(&0, 0)?.iter() {
            for (sum, count) in total.buckets.iter_mut().zip(cpu.buckets) {
                *sum += count;
            }
            total.sum_ns = total.sum_ns.wrapping_add(cpu.sum_ns);
        }
        Ok(total)
    }

    /// The kernel-side counters (COUNTER_*), summed over CPUs.
    pub fn counters(&self) -> Result<Counters> {
        let map: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map("COUNTERS").context("no COUNTERS map")?)?;
        let sum = |index: u32| -> Result<u64> { Ok(map.get(&index, 0)?.iter().copied().sum()) };
        Ok(Counters {
            ring_buffer_drops: sum(abi::COUNTER_RINGBUF_DROPS)?,
            readonly_adjtimex: sum(abi::COUNTER_READONLY_ADJTIMEX)?,
            kernel_events: sum(abi::COUNTER_EVENTS)?,
            pending_full: sum(abi::COUNTER_PENDING_FULL)?,
            clock_syscalls: sum(abi::COUNTER_SYSCALLS)?,
            guard_denied: sum(abi::COUNTER_GUARD_DENIED)?,
            guard_would_deny: sum(abi::COUNTER_GUARD_WOULD_DENY)?,
            guard_unidentified_callers: sum(abi::COUNTER_GUARD_NO_EXE)?,
            timer_late_events: sum(abi::COUNTER_TIMER_LATE_EVENTS)?,
            timer_late_drops: sum(abi::COUNTER_TIMER_LATE_DROPS)?,
            timer_read_faults: sum(abi::COUNTER_TIMER_READ_FAULTS)?,
            service_exit_drops: sum(abi::COUNTER_SERVICE_EXIT_DROPS)?,
            tracked_full: sum(abi::COUNTER_TRACKED_FULL)?,
            events_summarised: sum(abi::COUNTER_SUMMARISED)?,
            repeats_map_full: sum(abi::COUNTER_REPEATS_FULL)?,
        })
    }

    /// The epoch the kernel files repeats under now (a pinned map keeps a previous
    /// daemon's, so it goes on from there).
    pub fn repeat_epoch(&self) -> Result<u32> {
        let map: Array<_, u32> = Array::try_from(
            self.ebpf
                .map("REPEAT_EPOCH")
                .context("no REPEAT_EPOCH map")?,
        )?;
        Ok(map.get(&0, 0)?)
    }

    pub fn set_repeat_epoch(&mut self, epoch: u32) -> Result<()> {
        let mut map: Array<_, u32> = Array::try_from(
            self.ebpf
                .map_mut("REPEAT_EPOCH")
                .context("no REPEAT_EPOCH map")?,
        )?;
        map.set(0, epoch, 0)?;
        Ok(())
    }

    /// Takes the repeat counts of every epoch before `before` out of the kernel: read, then
    /// deleted. The caller makes sure no program still counts into those epochs.
    pub fn take_repeats(&mut self, before: u32) -> Result<Vec<(abi::RepeatKey, abi::RepeatCount)>> {
        let mut map: HashMap<_, abi::RepeatKey, abi::RepeatCount> =
            HashMap::try_from(self.ebpf.map_mut("REPEATS").context("no REPEATS map")?)?;
        // Keys first: deleting while walking a BPF hash can restart the walk.
        let keys: Vec<abi::RepeatKey> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.epoch < before)
            .collect();
        let mut taken = Vec::with_capacity(keys.len());
        for key in keys {
            // One entry that cannot be read or removed stays for the next interval; the
            // counts already taken out are not given up for it.
            match map.get(&key, 0) {
                Ok(count) => match map.remove(&key) {
                    Ok(()) => taken.push((key, count)),
                    Err(err) => tracing::warn!("cannot remove a repeat count: {err}"),
                },
                Err(err) => tracing::warn!("cannot read a repeat count: {err}"),
            }
        }
        Ok(taken)
    }

    /// Symbolised kernel stack of an in-kernel event (innermost frame first).
    pub fn kernel_stack(&mut self, stack_id: i64) -> Vec<String> {
        let Ok(id) = u32::try_from(stack_id) else {
            return Vec::new();
        };
        let Some(map) = self.ebpf.map("STACKS") else {
            return Vec::new();
        };
        let Ok(stacks) = StackTraceMap::<_>::try_from(map) else {
            return Vec::new();
        };
        let Ok(stack) = stacks.get(&id, 0) else {
            return Vec::new();
        };
        let ips: Vec<u64> = stack.frames().iter().map(|frame| frame.ip).collect();
        let symbols = self.kernel_symbols.lookup(&ips);
        ips.iter()
            .zip(symbols)
            .filter_map(|(ip, symbol)| match symbol {
                // Our own program and its trampoline head every stack: not the cause.
                Some(s) if s.name.ends_with("[bpf]") => None,
                Some(s) => Some(format!("{}+{:#x}", s.name, ip - s.start)),
                None => Some(format!("{ip:#x}")),
            })
            .collect()
    }

    /// The kernel functions at `addresses` ("tick_sched_timer"), or each address in hex.
    pub fn kernel_functions(&mut self, addresses: &[u64]) -> Vec<String> {
        let symbols = self.kernel_symbols.lookup(addresses);
        addresses
            .iter()
            .zip(symbols)
            .map(|(address, symbol)| match symbol {
                Some(s) => s.name,
                None => format!("{address:#x}"),
            })
            .collect()
    }
}
