//! Start-up: everything the daemon opens, loads and spawns before its event loop runs.

use super::*;

/// Opens the journal and the control socket, loads and attaches the eBPF programs, starts
/// the guard, the NTP service and the services' probes and log followers, journals the
/// start and tells systemd: the daemon, and the inputs its event loop waits on.
pub(super) async fn start(
    config: Config,
    config_origin: String,
    config_source: ConfigSource,
) -> Result<(Daemon, Inputs)> {
    // No transparent huge pages for the daemon: with THP "always" (the test VM's Debian
    // kernel) khugepaged folds its small, sparse heap into 2 MiB pages some seconds after a
    // burst, +4 MB of RSS with nothing allocated, and heap trims no longer give memory
    // back. Huge pages buy a heap this size nothing. Failure only loses that saving.
    if let Err(err) = clockguard_sys::disable_transparent_huge_pages() {
        tracing::debug!("PR_SET_THP_DISABLE: {err}");
    }
    let (journal, journal_problems) = Journal::open(
        &config.state_dir,
        config.audit.max_journal_bytes,
        config.audit.keep_journals,
    )?;
    for problem in journal_problems {
        tracing::warn!("{problem}");
    }
    let read_gid = config
        .control
        .read_group
        .as_deref()
        .map(control::resolve_group)
        .transpose()?;
    let listener = control::bind(&config.runtime_dir, read_gid).await?;

    let tracefs = match bpf::ensure_tracefs() {
        Ok(path) => path,
        Err(err) => {
            tracing::warn!("{err:#}");
            std::path::Path::new("/sys/kernel/tracing")
        }
    };
    let guard_wanted = config.mode == crate::config::Mode::Guard
        && crate::lsm::active_lsms().bpf_active() != Some(false);
    let not_pinned = guard_wanted
        .then(crate::pinning::pins_would_end_with_daemon)
        .flatten();
    if let Some(why) = &not_pinned {
        tracing::warn!("guard not pinned: {why}; it ends with the daemon");
    }
    let (mut probes, load_error) = match Probes::load(&LoadOptions {
        disabled_hooks: &config.audit.disabled_hooks,
        emit_readonly: config.audit.journal_readonly,
        tracefs,
        timer_late_threshold_ns: (config.timers.stall_threshold_ms * 1e6) as u64,
        // Only a guard that can enforce is worth keeping in force without the daemon, and
        // only where the pins can outlive it.
        pin: guard_wanted && not_pinned.is_none(),
        repeats_in_full: config.audit.repeats_in_full,
        ebpf_log_level: config.ebpf_log_level,
    }) {
        Ok(p) => (Some(p), None),
        Err(err) => {
            tracing::error!("no eBPF hook at all: {err:#}; only the fallback detector runs");
            (None, Some(format!("{err:#}")))
        }
    };
    if let Some(reader) = probes.as_mut().and_then(Probes::take_ebpf_log) {
        follow_ebpf_log(reader);
    }
    // Loading parsed the eBPF object and the kernel's BTF (megabytes, freed since): give
    // that memory back to the system instead of keeping it as the daemon's RSS for good.
    clockguard_sys::malloc_trim();
    let mut hooks = probes.as_ref().map(|p| p.hooks.clone()).unwrap_or_default();
    for hook in &hooks {
        if let Some(by) = &hook.replaced_by {
            tracing::info!(
                "hook {} ({}) not needed: {by} attached",
                hook.name,
                hook.kind
            );
            continue;
        }
        match (&hook.attached, &hook.error) {
            (true, None) => tracing::info!("hook {} ({}) attached", hook.name, hook.kind),
            (true, Some(note)) => tracing::warn!("hook {} attached: {note}", hook.name),
            (false, Some(why)) => {
                tracing::warn!("hook {} ({}) not attached: {why}", hook.name, hook.kind);
            }
            (false, None) => {}
        }
    }
    if probes.is_some() {
        // A name that matches no hook is a typo (or a name from another version): say so,
        // or the hook it meant stays attached without a word.
        for name in &config.audit.disabled_hooks {
            if !hooks.iter().any(|h| h.name == *name) {
                let names: Vec<&str> = hooks.iter().map(|h| h.name.as_str()).collect();
                tracing::warn!(
                    "audit.disabled_hooks: no hook is named {name:?} (the hooks are: {})",
                    names.join(", ")
                );
            }
        }
    }
    let events: Option<AsyncFd<RingBuf<MapData>>> = match probes.as_mut() {
        Some(p) => {
            let ring = p.take_events()?;
            let registered = clockguard_sys::poll_readable(ring);
            Some(registered.map_err(|e| anyhow::anyhow!("cannot poll the ring buffer: {e}"))?)
        }
        None => None,
    };

    let timer_events: Option<AsyncFd<RingBuf<MapData>>> = match probes.as_mut() {
        Some(p) if p.hook("hrtimer_expire_entry").is_some_and(|h| h.attached) => {
            let ring = p.take_timer_events()?;
            let registered = clockguard_sys::poll_readable(ring);
            Some(registered.map_err(|e| anyhow::anyhow!("cannot poll the timer ring: {e}"))?)
        }
        _ => None,
    };
    // Tracked services: their track files are checked before anything is written, their
    // exits come from the kernel, their probes run as tasks of their own.
    let mut faulted = Vec::new();
    for service in &config.services {
        let carried = match &service.track_file {
            Some(path) => {
                service_io::prepare_track_file(&service.name, path)?;
                service_io::read_track_file(path) == Some(true)
            }
            None => false,
        };
        faulted.push(carried);
    }
    let tracker = Tracker::new(&config.services, &faulted, clock::monotonic());
    let service_events: Option<AsyncFd<RingBuf<MapData>>> = match probes.as_mut() {
        Some(p)
            if !config.services.is_empty()
                && p.hook("sched_process_exit").is_some_and(|h| h.attached) =>
        {
            let ring = p.take_service_events()?;
            let registered = clockguard_sys::poll_readable(ring);
            Some(registered.map_err(|e| anyhow::anyhow!("cannot poll the service ring: {e}"))?)
        }
        _ => None,
    };
    if !config.services.is_empty() && service_events.is_none() {
        tracing::warn!(
            "tracked services: the sched_process_exit hook is not attached; deaths are not \
             seen, only health checks run"
        );
    }
    let (check_tx, check_rx) = mpsc::channel::<(usize, CheckOutcome)>(64);
    for (index, service) in config.services.iter().enumerate() {
        if let Some(probe) = &service.probe {
            // Validated when the configuration was parsed.
            let addr: std::net::SocketAddr = probe.parse()?;
            tokio::spawn(probe_loop(
                index,
                addr,
                service.probe_expect.clone(),
                service.interval_ms,
                service.probe_timeout_ms,
                check_tx.clone(),
            ));
        }
    }
    drop(check_tx);
    let (log_tx, log_rx) = mpsc::channel::<services::LogMatch>(64);
    for (index, service) in config.services.iter().enumerate() {
        if let Some(path) = &service.log_file {
            tokio::spawn(log_loop(
                index,
                service_io::LogTail::new(path),
                service.log_patterns.clone(),
                log_tx.clone(),
            ));
        }
    }
    drop(log_tx);
    // The first scan runs before the loop (below).
    let mut service_scan = tokio::time::interval_at(
        tokio::time::Instant::now() + SERVICE_SCAN_INTERVAL,
        SERVICE_SCAN_INTERVAL,
    );
    service_scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let have_services = !config.services.is_empty();

    // The kernel's own word on its clocks: the boot's history now, new messages as logged.
    let (kernel_messages, history) = match kmsg::open() {
        Ok(mut file) => {
            let history = kmsg::read_available(&mut file, true).unwrap_or_else(|err| {
                tracing::warn!("/dev/kmsg: {err}");
                Vec::new()
            });
            match clockguard_sys::poll_readable(file) {
                Ok(fd) => (Some(fd), history),
                Err(err) => {
                    tracing::warn!("cannot poll /dev/kmsg: {err}");
                    (None, history)
                }
            }
        }
        Err(err) => {
            tracing::warn!(
                "cannot read /dev/kmsg ({err}): the kernel's clocksource messages are not followed"
            );
            (None, Vec::new())
        }
    };
    for message in history.iter().filter(|m| m.is_instability()) {
        tracing::warn!(
            "before clockguard started, the kernel logged: {}",
            message.text
        );
    }

    let vm = vmfacts::read(Path::new("/sys"), Path::new("/proc"));
    if let Some(hypervisor) = &vm.hypervisor {
        tracing::info!(
            "running in a {hypervisor} virtual machine, clocksource {}",
            vm.clocksource.as_deref().unwrap_or("?")
        );
    }
    let mut sampler = tokio::time::interval(std::time::Duration::from_millis(
        config.timers.sample_interval_ms,
    ));
    sampler.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut repeat_interval = tokio::time::interval(std::time::Duration::from_millis(
        config.audit.summary_interval_ms,
    ));
    repeat_interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A pinned map goes on from a previous daemon's epoch, so its counts are older.
    let repeat_epoch = probes
        .as_ref()
        .and_then(|p| p.repeat_epoch().ok())
        .unwrap_or(0);

    let (jump_tx, jump_rx) = mpsc::channel(16);
    let mut fallback_status = HookStatus::new(
        "timerfd_cancel_on_set",
        "userspace",
        "timerfd(CLOCK_REALTIME, TFD_TIMER_CANCEL_ON_SET)".into(),
    );
    if config.audit.fallback_detector {
        match fallback::open() {
            Ok(timer) => {
                fallback_status.attached = true;
                tokio::spawn(async move {
                    if let Err(err) = fallback::run(timer, jump_tx).await {
                        tracing::error!("fallback detector stopped: {err:#}");
                    }
                });
            }
            Err(err) => {
                let (message, errno) = bpf::describe_error(err.as_ref());
                fallback_status.error = Some(message);
                fallback_status.errno = errno;
            }
        }
    } else {
        fallback_status.error = Some("disabled in the configuration".into());
    }
    hooks.push(fallback_status);

    let guard = start_guard(&config, probes.as_mut())?;
    let previous_heartbeat = read_heartbeat(&config.runtime_dir);

    // The error bound, while there is a discipline to take it from.
    let ntp_client = config.ntp.has_sources();
    // The vmclock device before the bound: with one, the bound's marker is the device's.
    let vmclock = vmclock::VmclockWatch::start(&config.timers);
    let bound = (config.bound.enabled && ntp_client).then(|| {
        bound::Publisher::start(
            &config.bound,
            bound::policy(
                &config,
                &guard.enforcement,
                vmclock.readers_marker().is_some(),
            ),
            vmclock.readers_marker().unwrap_or(0),
        )
    });
    let (bound_tx, bound_updates) = match bound {
        Some(_) => {
            let (tx, rx) = tokio::sync::watch::channel(None);
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };
    let bound_refresh = bound.is_some().then(|| {
        let mut refresh = tokio::time::interval(BOUND_REFRESH);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        refresh
    });
    let ntp =
        ntp::client::spawn(&config.ntp, guard.slew.clone(), &config.state_dir, bound_tx).await?;
    if ntp.is_some() && guard.slew.is_none() {
        tracing::info!(
            "NTP: measuring only ({} mode): the clock is disciplined in guard mode",
            guard.enforcement.mode
        );
    }

    let (query_tx, query_rx) = mpsc::channel(64);
    if let Some(listen) = &config.metrics.listen {
        let listener = crate::metrics::bind(listen).await?;
        tracing::info!(
            "metrics: serving GET /metrics on {}",
            listener.local_addr()?
        );
        tokio::spawn(crate::metrics::serve(
            listener,
            query_tx.clone(),
            ntp.clone(),
        ));
    }
    let (live, _) = broadcast::channel(LIVE_BACKLOG);
    let access = control::Access {
        admin_uid: clockguard_sys::effective_uid(),
        read_gid,
    };
    tokio::spawn(control::serve(
        listener,
        access,
        control::Limits::default(),
        query_tx,
        live.clone(),
        ntp.clone(),
    ));

    let hook_stats = if config.audit.measure_hook_cost {
        match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
            Ok(fd) => Some(fd),
            Err(err) => {
                tracing::warn!("measure_hook_cost: the kernel refused BPF_ENABLE_STATS: {err}");
                None
            }
        }
    } else {
        None
    };
    let vmclock_poll = vmclock.poll_interval();
    let mut daemon = Daemon {
        timers: TimerWatch::new(&config.timers, vm.hypervisor),
        vmclock,
        started: Instant::now(),
        started_wall: record::rfc3339_ns(clock::realtime_ns()),
        config_origin,
        config_source,
        probes,
        load_error,
        not_pinned,
        hooks,
        journal,
        journald: Journald::new(&config.audit.journald_socket, config.audit.journald),
        enricher: Enricher::system(),
        reconciler: Reconciler::default(),
        recent: VecDeque::with_capacity(RECENT),
        live,
        unwritten: Vec::new(),
        stats: DaemonStats::default(),
        last_tai_offset_s: clock::tai_offset_s(),
        config,
        enforcement: guard.enforcement,
        policy: guard.policy,
        time_services: guard.time_services,
        slew: guard.slew,
        last_heartbeat: None,
        journaled_at_trim: 0,
        journaled_at_sample: 0,
        repeat_epoch,
        ntp: ntp.clone(),
        bound,
        hook_stats,
        services: tracker,
        service_processes: Default::default(),
        kernel_clock_messages: kernel_messages.is_some().then(VecDeque::new),
    };
    daemon.journal_start(previous_heartbeat, guard.pins);
    daemon.on_kernel_messages(history);
    if have_services {
        // Track the services' processes before the first exit can be missed.
        daemon.on_service_scan();
    }
    let (head_seq, head_hash) = daemon.journal.head();
    tracing::info!(
        "clockguard {} running in {} mode (config: {}), journal {} (head seq {head_seq}, \
         hash {head_hash})",
        env!("CARGO_PKG_VERSION"),
        daemon.enforcement.mode,
        daemon.config_origin,
        daemon.journal.path().display()
    );
    let seal_interval = daemon.journal.sealing().map(|(key_id, epoch)| {
        let period = std::time::Duration::from_secs(daemon.config.audit.seal_interval_s);
        tracing::info!(
            "the journal is sealed: key id {key_id}, epoch {epoch}, a seal every {period:?}"
        );
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    });
    systemd::notify("READY=1");
    Ok((
        daemon,
        Inputs {
            events,
            timer_events,
            service_events,
            checks: check_rx,
            log_matches: log_rx,
            service_scan,
            have_services,
            kernel_messages,
            sampler,
            repeat_interval,
            fallback_jumps: jump_rx,
            queries: query_rx,
            ntp,
            bound_refresh,
            bound_updates,
            seal_interval,
            vmclock_poll,
        },
    ))
}

/// The guard as this kernel and configuration allow it.
struct GuardSetup {
    enforcement: Enforcement,
    policy: Vec<PolicyEntry>,
    time_services: Vec<TimeService>,
    /// The slew engine, running only while the guard enforces.
    slew: Option<SlewHandle>,
    /// What became of the pinned guard: this daemon's pins, the hooks adopted, the pins of
    /// other builds released (null when not pinned).
    pins: Value,
}

/// Decides whether the guard enforces (and says why in the log), writes the policy into
/// the kernel, and starts the slew engine when it does.
fn start_guard(config: &Config, probes: Option<&mut Probes>) -> Result<GuardSetup> {
    let policy = guard::resolve_policy(&config.guard);
    let time_services = guard::other_time_services(Path::new("/"), Path::new("/proc"));
    let no_layout = "no eBPF object loaded".to_string();
    let enforcement = guard::decide(
        config.mode,
        &config.guard,
        &time_services,
        &guard::GuardHooks {
            settime: probes.as_deref().and_then(|p| p.hook("settime")),
            capable: probes.as_deref().and_then(|p| p.hook("capable")),
            // Both halves are needed: the one that failed, if any, says why.
            adjtimex: probes.as_deref().and_then(|p| {
                let exit = p.hook("do_adjtimex_exit").filter(|h| !h.attached);
                exit.or_else(|| p.hook("do_adjtimex"))
            }),
            lsms: crate::lsm::active_lsms(),
            exe_layout_error: match &probes {
                Some(p) => p.exe_layout_error.as_deref(),
                None => Some(&no_layout),
            },
        },
    );
    let mut pins = Value::Null;
    if let Some(p) = probes {
        // Written in observe mode too: the hooks then record what guard mode would refuse.
        p.set_guard(
            enforcement.active,
            config.guard.exclusive_discipline,
            &policy,
        )?;
        if enforcement.active {
            // This guard is in place: an older build's pinned one may go.
            let released = p.release_stale_pins();
            if let Some(dir) = p.pin_dir() {
                let adopted: Vec<&str> = p
                    .hooks
                    .iter()
                    .filter(|h| h.adopted)
                    .map(|h| h.name.as_str())
                    .collect();
                if !adopted.is_empty() {
                    tracing::warn!(
                        "guard: adopted {} hooks a previous clockguard left pinned in {}",
                        adopted.len(),
                        dir.display()
                    );
                }
                pins = json!({ "dir": dir, "adopted": adopted, "stale_released": released });
            }
        } else {
            // Nothing to keep in force when the daemon is gone.
            p.release_pins();
        }
    }
    for entry in policy
        .iter()
        .map(|e| &e.shown)
        .filter(|e| e.problem.is_none())
    {
        tracing::info!("guard policy: {} {}", entry.class, entry.path.display());
    }
    if enforcement.active {
        tracing::info!("guard: {}", enforcement.reason);
    } else {
        tracing::warn!("guard: {}", enforcement.reason);
    }
    for gap in &enforcement.gaps {
        tracing::warn!("guard: {gap}");
    }
    let slew = if enforcement.active {
        let slew_config = SlewConfig {
            max_slew_ppm: config.guard.max_slew_ppm,
            max_correction_ns: (config.guard.max_correction_s * 1e9) as i64,
        };
        let state = config.runtime_dir.join("slew-state.json");
        Some(
            SlewHandle::spawn(slew_config, LinuxClock, SLEW_INTERVAL, Some(state))
                .map_err(|e| anyhow::anyhow!("cannot start the slew engine: {e}"))?,
        )
    } else {
        None
    };

    Ok(GuardSetup {
        enforcement,
        policy,
        time_services,
        slew,
        pins,
    })
}

/// Probes one service every `interval_ms` and hands each result to the daemon.
async fn probe_loop(
    service: usize,
    addr: std::net::SocketAddr,
    expect: Option<String>,
    interval_ms: u64,
    timeout_ms: u64,
    results: mpsc::Sender<(usize, CheckOutcome)>,
) {
    let mut every = tokio::time::interval(std::time::Duration::from_millis(interval_ms));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let result = service_io::probe(
            addr,
            expect.as_deref(),
            std::time::Duration::from_millis(timeout_ms),
        )
        .await;
        let outcome = CheckOutcome {
            ok: result.is_ok(),
            detail: result.unwrap_or_else(|e| e),
            at: clock::monotonic(),
        };
        if results.send((service, outcome)).await.is_err() {
            return;
        }
    }
}

/// How often a service's log file is read for new lines.
const LOG_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// Follows one service's log file and hands each line with one of `patterns` to the
/// daemon. A read error is logged when it starts and when it ends, not every poll.
async fn log_loop(
    service: usize,
    mut tail: service_io::LogTail,
    patterns: Vec<String>,
    matches: mpsc::Sender<services::LogMatch>,
) {
    let mut every = tokio::time::interval(LOG_POLL_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        every.tick().await;
        let lines = match tail.read_new_lines() {
            Ok(lines) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("{} is readable again", tail.path().display());
                }
                lines
            }
            Err(err) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!("cannot read {}: {err}", tail.path().display());
                }
                continue;
            }
        };
        for line in lines {
            let Some(pattern) = patterns.iter().find(|p| line.contains(p.as_str())) else {
                continue;
            };
            let found = services::LogMatch {
                service,
                at: clock::monotonic(),
                pattern: pattern.clone(),
                line,
            };
            if matches.send(found).await.is_err() {
                return;
            }
        }
    }
}

/// The previous daemon's heartbeat, if it left one.
fn read_heartbeat(runtime_dir: &Path) -> Option<Heartbeat> {
    let bytes = std::fs::read(runtime_dir.join(HEARTBEAT_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Reads the eBPF programs' log records (`ebpf_log_level`) into the daemon's log as they
/// come. A diagnostic: when it cannot be read the daemon runs on without it. A record the
/// reader cannot decode panics inside aya-log, which ends this task only.
fn follow_ebpf_log(reader: bpf::EbpfLogReader) {
    let mut reader = match clockguard_sys::poll_readable(reader) {
        Ok(reader) => reader,
        Err(err) => {
            tracing::warn!("ebpf_log_level: cannot poll the eBPF programs' log: {err}");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            let Ok(mut ready) = reader.readable_mut().await else {
                return;
            };
            ready.get_inner_mut().flush();
            ready.clear_ready();
        }
    });
}
