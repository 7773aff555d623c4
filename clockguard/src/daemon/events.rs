//! What the daemon does with each input: clock events (enriched, judged, journaled and
//! published), late timers, the fallback detector's jumps, services' exits, checks and log
//! lines, the kernel's clock messages, and the periodic sample.

use super::*;
use clockguard_core::time::Monotonic;

impl Daemon {
    pub(super) fn on_late_timers(&mut self, batch: Vec<TimerLateEvent>) {
        // A timer as late as a stall (the kernel sends no other): until the NTP service
        // measures again, the bound cannot tell a vCPU held off from a VM paused with its
        // clock stopped, and is Disrupted from now; the stall record follows at the next
        // sample, once the machine's timers are all seen.
        if let Some(latest) = batch.iter().max_by_key(|e| e.lateness_ns) {
            self.bound_disrupted(
                clockguard_core::bound::Disruption::Pause {
                    ns: latest.lateness_ns as i64,
                },
                Some(Monotonic::from_ns(latest.mono_ns as i64)),
            );
        }
        // One pass over kallsyms names the whole batch's callbacks.
        let addresses: Vec<u64> = batch.iter().map(|e| e.function).collect();
        let functions = match self.probes.as_mut() {
            Some(probes) => probes.kernel_functions(&addresses),
            None => Vec::new(),
        };
        for (index, event) in batch.into_iter().enumerate() {
            self.timers.late(LateTimer {
                cpu: Some(event.cpu),
                at: Monotonic::from_ns(event.mono_ns as i64),
                lateness_ns: event.lateness_ns as i64,
                function: functions
                    .get(index)
                    .filter(|_| event.function != 0)
                    .cloned(),
            });
        }
    }

    /// Once a whole sample interval passed without records after some were journaled (an
    /// event storm, or one event), gives the heap they freed back to the system: glibc
    /// keeps freed chunks as RSS (in the VM, a 100,000-call storm left 2.1 MB of heap
    /// instead of 1.3). Never during a burst: trimming between batches would only fault
    /// the pages back in. A trim costs well under a millisecond.
    pub(super) fn trim_after_burst(&mut self) {
        let journaled = self.stats.records_journaled;
        if journaled != self.journaled_at_trim && journaled == self.journaled_at_sample {
            clockguard_sys::malloc_trim();
            self.journaled_at_trim = journaled;
        }
        self.journaled_at_sample = journaled;
    }

    /// The sampler's tick: clocks, steal and clocksource; closes stalls that are over.
    pub(super) fn on_sample(&mut self) {
        if self
            .last_heartbeat
            .is_none_or(|at| at.elapsed() >= HEARTBEAT_INTERVAL)
        {
            self.write_heartbeat();
        }
        self.trim_after_burst();
        self.vmclock_look_again();
        let sys = Path::new("/sys");
        let sample = timers::read_sample(sys);
        // While clockguard slews, the kernel's rate changes between samples.
        let slew_ppm_limit = match &self.slew {
            Some(_) => self.config.guard.max_slew_ppm,
            None => 0.0,
        };
        let kernel_sees_timers = self.timer_hook_attached();
        let records = self.timers.sample(
            sample,
            timers::read_steal_ns(Path::new("/proc")),
            timers::online_cpus(sys),
            slew_ppm_limit,
            kernel_sees_timers,
            clock::realtime_minus_monotonic_ns(),
        );
        if !records.is_empty() {
            self.journal_and_publish(records);
        }
    }

    pub(super) async fn process(&mut self, batch: Vec<Option<ClockEvent>>) {
        if batch.is_empty() {
            return;
        }
        let tai_now = clock::tai_offset_s();
        let tai_change = tai_now - self.last_tai_offset_s;
        self.last_tai_offset_s = tai_now;
        let mut records = Vec::with_capacity(batch.len());
        for event in batch {
            let Some(event) = event else {
                self.stats.abi_mismatches += 1;
                continue;
            };
            // A TAI offset change (leap second) is charged to the in-kernel event of the
            // batch; syscall events measure across their own call.
            let change = if event.kind == clockguard_ebpf::EVENT_CLOCK_WAS_SET {
                tai_change
            } else {
                0
            };
            let mut record = record::decode(&event, tai_now, change);
            // The error bound hears of a step as soon as it is decoded: before the slew,
            // the enrichment (/proc reads) and the journal's write.
            self.bound_disruptions(std::slice::from_ref(&record));
            // clockguard's own reads of the kernel's rate (the clock sampler, each
            // sample_interval_ms) would fill a journal_readonly journal with itself.
            if record.kind == "read" && event.tgid == std::process::id() {
                self.stats.own_reads_not_journaled += 1;
                continue;
            }
            if record.verdict == Verdict::Denied
                && event.guard.class == clockguard_ebpf::CLASS_SLEW_INSTEAD
            {
                self.slew_instead(&mut record).await;
            }
            if let (Some(delta), Some(at)) = (record.delta_ns, record.mono_ns) {
                self.reconciler.explained(delta, Monotonic::from_ns(at));
            }
            self.enricher.enrich(&mut record, event.cgroup_id);
            if event.flags & clockguard_ebpf::FLAG_HAS_STACK != 0 {
                if let Some(probes) = self.probes.as_mut() {
                    record.stack = probes.kernel_stack(event.stack_id);
                }
            }
            records.push(record);
        }
        self.journal_records(records);
    }

    /// Every summary interval: the kernel counts new repeats under a new epoch, and the
    /// counts of the epochs before the one that just ended are journaled. The one that
    /// just ended waits an interval more, and an RCU grace period passes first (see
    /// `wait_for_running_programs`), so that no program is still counting into what is
    /// read and deleted: a program preempted between reading the epoch and adding to its
    /// entry would otherwise add to an entry already freed, or to another key's.
    pub(super) fn on_repeat_interval(&mut self) {
        let ended = self.repeat_epoch;
        self.advance_repeat_epoch();
        crate::bpf::wait_for_running_programs();
        self.journal_repeats(ended);
    }

    pub(super) fn advance_repeat_epoch(&mut self) {
        let Some(probes) = self.probes.as_mut() else {
            return;
        };
        let next = self.repeat_epoch.wrapping_add(1);
        match probes.set_repeat_epoch(next) {
            Ok(()) => self.repeat_epoch = next,
            Err(err) => tracing::warn!("cannot advance the kernel's repeat epoch: {err:#}"),
        }
    }

    /// Journals one summary record per repeat count of the epochs before `before`, taking
    /// the counts out of the kernel.
    pub(super) fn journal_repeats(&mut self, before: u32) {
        let Some(probes) = self.probes.as_mut() else {
            return;
        };
        let mut counts = match probes.take_repeats(before) {
            Ok(counts) => counts,
            Err(err) => {
                tracing::warn!("cannot read the kernel's repeat counts: {err:#}");
                return;
            }
        };
        // In the order the calls were made.
        counts.sort_by_key(|(_, count)| count.first_mono_ns);
        let tai_offset_s = clock::tai_offset_s();
        let own = std::process::id();
        let mut records = Vec::new();
        for (key, count) in counts {
            let Some(mut record) = record::summary(&key, &count, tai_offset_s) else {
                continue;
            };
            // clockguard's own reads of the kernel's rate (journal_readonly), judged by the
            // same kind as in process() (decode names the calls' kind in `detail`).
            let of_kind = record.detail.as_ref().and_then(|d| d["kind"].as_str());
            if key.tgid == own && of_kind == Some("read") {
                self.stats.own_reads_not_journaled += count.summarised;
                continue;
            }
            self.enricher.enrich(&mut record, count.cgroup_id);
            records.push(record);
        }
        self.stats.summary_records += records.len() as u64;
        if !records.is_empty() {
            self.journal_and_publish(records);
        }
    }

    pub(super) fn on_fallback_jump(&mut self, jump: fallback::Jump) {
        self.stats.fallback_jumps += 1;
        let Some(unexplained) = self.reconciler.reconcile(&jump) else {
            return;
        };
        self.stats.fallback_unexplained += 1;
        // REALTIME at detection, in the new timeline.
        let wall = jump.seen.on_realtime(clock::realtime_minus_monotonic_ns());
        let record = Record {
            time: record::rfc3339_ns(wall.ns()),
            source: Source::Fallback,
            syscall: None,
            clock: Some("CLOCK_REALTIME".into()),
            kind: "step".into(),
            requested: json!({}),
            delta_ns: Some(unexplained),
            result: "0".into(),
            verdict: Verdict::Observed,
            clock_was_set: true,
            ..Default::default()
        };
        tracing::warn!(
            "clock jump of {:+.6} s that no kernel hook reported",
            unexplained as f64 / 1e9
        );
        self.journal_and_publish(vec![record]);
    }

    /// Ends the sealing epoch with a seal record (nothing while the journal is not
    /// sealed); the journal then evolves the key. `reason`: interval | stop.
    pub(super) fn seal(&mut self, reason: &str) {
        if let Some(record) = self.journal.seal_record(reason) {
            self.journal_records(vec![record]);
        }
    }

    pub(super) fn journal_and_publish(&mut self, records: Vec<Record>) {
        // The error bound first: the segment changes before the journal's write.
        self.bound_disruptions(&records);
        self.journal_records(records);
    }

    /// `journal_and_publish` for records whose disruptions the error bound has been told.
    pub(super) fn journal_records(&mut self, mut records: Vec<Record>) {
        if !self.unwritten.is_empty() {
            let mut pending = std::mem::take(&mut self.unwritten);
            pending.append(&mut records);
            records = pending;
        }
        let Appended { written, failed } = self.journal.append(records);
        if let Some((err, mut unwritten)) = failed {
            self.stats.journal_errors += 1;
            tracing::error!(
                "{err:#}; keeping {} records in memory to retry",
                unwritten.len()
            );
            if unwritten.len() > MAX_UNWRITTEN {
                let lost = unwritten.len() - MAX_UNWRITTEN;
                self.stats.records_lost_unwritable += lost as u64;
                unwritten.drain(..lost);
            }
            self.unwritten = unwritten;
        }
        // Whatever reached the file is counted, published and shown to the services, even
        // when a rotation failed after it.
        let records = written;
        self.stats.records_journaled += records.len() as u64;
        for cause in records.iter().filter_map(jump_cause) {
            *self.stats.jumps.entry(cause).or_default() += 1;
        }
        // Time jumps, for the tracked services (their own records never are one).
        let jumps: Vec<services::Jump> = if !self.services.is_empty() {
            let now = clock::monotonic();
            records
                .iter()
                .filter_map(|r| {
                    service_trigger(r).map(|cause| services::Jump::from_record(r, cause, now))
                })
                .collect()
        } else {
            Vec::new()
        };
        for record in records {
            let line: Arc<str> = match serde_json::to_string(&record) {
                Ok(s) => s.into(),
                Err(_) => continue,
            };
            self.journald.send(&record, &line);
            if self.recent.len() == RECENT {
                self.recent.pop_front();
            }
            self.recent.push_back(line.clone());
            let _ = self.live.send(line);
        }
        for jump in jumps {
            let actions = self.services.on_jump(jump);
            self.apply_service_actions(actions);
        }
    }

    /// The kernel's clock messages: kept for `status`; the watchdog marking a clocksource
    /// unstable while clockguard runs is journaled (source timers, kind
    /// clocksource_unstable), as the kernel switches clocksource right after.
    pub(super) fn on_kernel_messages(&mut self, messages: Vec<ClockMessage>) {
        let mut records = Vec::new();
        for message in messages {
            if message.is_instability() && !message.before_start {
                tracing::warn!("the kernel: {}", message.text);
                records.push(Record {
                    time: record::rfc3339_ns(clock::realtime_ns()),
                    source: Source::Timers,
                    kind: "clocksource_unstable".into(),
                    cause: Some(message.kind.clone()),
                    detail: Some(json!({
                        "kernel_message": message.text,
                        "kmsg_seq": message.seq,
                        "uptime_s": message.uptime_s,
                        "clocksource": crate::vmfacts::current_clocksource(Path::new("/sys")),
                    })),
                    requested: json!({}),
                    result: "0".into(),
                    verdict: Verdict::Observed,
                    ..Default::default()
                });
            }
            let kept = self.kernel_clock_messages.get_or_insert_with(VecDeque::new);
            if kept.len() == KERNEL_CLOCK_MESSAGES {
                kept.pop_front();
            }
            kept.push_back(message);
        }
        if !records.is_empty() {
            self.journal_and_publish(records);
        }
    }

    /// Exits of tracked processes, from the kernel.
    pub(super) fn on_service_exits(&mut self, batch: Vec<ServiceExitEvent>) {
        for event in batch {
            let scanned = self.service_processes.remove(&event.tgid);
            let exe = if event.flags & clockguard_ebpf::SERVICE_EXIT_HAS_EXE != 0 {
                record::text(&event.exe)
            } else {
                scanned.as_ref().and_then(|p| p.exe.clone())
            };
            let ppid = if event.flags & clockguard_ebpf::SERVICE_EXIT_HAS_PROCINFO != 0 {
                Some(event.ppid)
            } else {
                scanned.as_ref().map(|p| p.ppid)
            };
            let status = if event.flags & clockguard_ebpf::SERVICE_EXIT_HAS_CODE != 0 {
                services::ExitStatus::from_wait_status(event.exit_code)
            } else {
                services::ExitStatus::Unknown
            };
            let death = services::Death {
                service: event.service as usize,
                at: Monotonic::from_ns(event.mono_ns as i64),
                pid: event.tgid,
                ppid,
                comm: record::text(&event.comm).unwrap_or_default(),
                exe,
                status,
            };
            let actions = self.services.on_death(death);
            self.apply_service_actions(actions);
        }
    }

    /// Every SERVICE_SCAN_INTERVAL: which processes belong to the services (the kernel
    /// tracks them from here on, and their children from fork), the "is it running" check
    /// of services without a probe, and the trackers' clock.
    pub(super) fn on_service_scan(&mut self) {
        let found = service_io::scan(Path::new("/proc"), &self.config.services);
        let mut per_service = vec![0usize; self.services.len()];
        for info in found.values() {
            per_service[info.service as usize] += 1;
        }
        if let Some(probes) = self.probes.as_mut() {
            let wanted = found
                .iter()
                .map(|(pid, info)| (*pid, info.service))
                .collect();
            if let Err(err) = probes.sync_tracked(&wanted) {
                tracing::warn!("tracked services: {err:#}");
            }
        }
        self.service_processes = found;
        let now = clock::monotonic();
        let mut actions = Vec::new();
        for (index, count) in per_service.into_iter().enumerate() {
            self.services.set_processes(index, count);
            if self.services.config(index).probe.is_none() {
                actions.extend(self.services.on_check(
                    index,
                    CheckOutcome {
                        ok: count > 0,
                        detail: format!("{count} processes running"),
                        at: now,
                    },
                ));
            }
        }
        actions.extend(self.services.tick(now));
        self.apply_service_actions(actions);
    }

    pub(super) fn apply_service_actions(&mut self, actions: Vec<services::Action>) {
        for action in actions {
            match action {
                services::Action::Journal {
                    service,
                    mut record,
                    at,
                    notify,
                } => {
                    let time = at.on_realtime(clock::realtime_minus_monotonic_ns());
                    record.time = record::rfc3339_ns(time.ns());
                    let name = self.services.config(service).name.clone();
                    let line = format!(
                        "service {name}: {} {}{}{}",
                        record.kind,
                        record
                            .comm
                            .as_deref()
                            .map(|c| format!("{c} (pid {}) ", record.pid.unwrap_or(0)))
                            .unwrap_or_default(),
                        record.result,
                        record
                            .cause
                            .as_deref()
                            .map(|c| format!(" (cause: {c})"))
                            .unwrap_or_default(),
                    );
                    if record.verdict == Verdict::Fault {
                        tracing::warn!("{line}");
                    } else {
                        tracing::info!("{line}");
                    }
                    // The notify command's input, taken before the record moves into the
                    // journal (only when there is a command to run).
                    let argv = self.services.config(service).notify.clone();
                    let notify_input = (notify && !argv.is_empty()).then(|| {
                        let unjournaled = serde_json::to_string(&record).unwrap_or_default();
                        (notify_env(&name, &record), unjournaled)
                    });
                    self.journal_and_publish(vec![*record]);
                    if let Some((env, unjournaled)) = notify_input {
                        // The journaled line (with its seq) when it was written.
                        let json = match self.unwritten.is_empty() {
                            true => self
                                .recent
                                .back()
                                .map(ToString::to_string)
                                .unwrap_or(unjournaled),
                            false => unjournaled,
                        };
                        service_io::spawn_command(
                            &argv,
                            env,
                            json,
                            format!("service {name}: notify"),
                            SERVICE_COMMAND_LIMIT,
                        );
                    }
                }
                services::Action::TrackFile { service, fault } => {
                    let config = self.services.config(service);
                    let Some(path) = config.track_file.clone() else {
                        continue;
                    };
                    let name = config.name.clone();
                    match service_io::write_track_file(&path, fault) {
                        Ok(()) => {
                            self.services
                                .track_file_written(service, fault, clock::realtime());
                            tracing::info!(
                                "service {name}: track file {} = {} ({})",
                                path.display(),
                                u8::from(fault),
                                if fault { "FAULT" } else { "healthy" }
                            );
                        }
                        Err(err) => {
                            self.stats.track_file_errors += 1;
                            tracing::error!(
                                "service {name}: cannot write track file {}: {err}",
                                path.display()
                            );
                        }
                    }
                }
                services::Action::Restart { service } => {
                    let config = self.services.config(service);
                    let env = vec![("CLOCKGUARD_SERVICE".to_string(), config.name.clone())];
                    service_io::spawn_command(
                        &config.restart,
                        env,
                        String::new(),
                        format!("service {}: restart", config.name),
                        SERVICE_COMMAND_LIMIT,
                    );
                }
            }
        }
    }

    pub(super) fn flush_unwritten(&mut self) {
        if !self.unwritten.is_empty() {
            self.journal_and_publish(Vec::new());
        }
    }

    /// Journals this start: how the previous run ended (a clean stop, or killed: then the
    /// time it was last alive and the events lost while it was down) and what became of
    /// the pinned guard. The events the adopted hooks wrote while no daemon ran follow it.
    pub(super) fn journal_start(&mut self, previous: Option<Heartbeat>, pins: Value) {
        let stop = previous_stop(
            self.journal.previous_run_ended_cleanly(),
            previous.as_ref(),
            clock::reading().realtime,
            self.ring_buffer_drops(),
        );
        let mut detail = json!({ "pid": std::process::id(), "guard": pins });
        detail["previous_stop"] = json!(stop.as_str());
        if let PreviousStop::Unclean {
            pid,
            last_alive,
            down_at_most_s,
            ring_buffer_drops_while_down,
        } = stop
        {
            let last_alive = record::rfc3339_ns(last_alive.ns());
            tracing::warn!(
                "the previous clockguard (pid {pid}) did not stop cleanly: last alive \
                 {last_alive}, {down_at_most_s:.1} s ago"
            );
            detail["previous_pid"] = json!(pid);
            detail["last_alive"] = json!(last_alive);
            detail["down_at_most_s"] = json!(down_at_most_s);
            detail["ring_buffer_drops_while_down"] = json!(ring_buffer_drops_while_down);
        }
        self.journal_and_publish(vec![daemon_record("start", detail)]);
    }

    /// The kernel's count of events lost to a full ring buffer (None without eBPF).
    pub(super) fn ring_buffer_drops(&self) -> Option<u64> {
        let counters = self.probes.as_ref()?.counters().ok()?;
        Some(counters.ring_buffer_drops)
    }

    /// The heartbeat file: when this daemon was last alive, for the next one to say how
    /// long no daemon ran if this one is killed.
    pub(super) fn write_heartbeat(&mut self) {
        self.last_heartbeat = Some(Instant::now());
        let heartbeat = Heartbeat {
            pid: std::process::id(),
            written: clock::reading().realtime,
            ring_buffer_drops: self.ring_buffer_drops().unwrap_or(0),
        };
        let path = self.config.runtime_dir.join(HEARTBEAT_FILE);
        let written = serde_json::to_vec(&heartbeat)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&path, bytes));
        if let Err(err) = written {
            tracing::debug!("cannot write {}: {err}", path.display());
        }
    }
}
