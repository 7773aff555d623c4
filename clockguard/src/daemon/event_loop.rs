//! The event loop: waits on every input, hands each to the daemon, and on SIGTERM or
//! SIGINT stops it without losing what the kernel still holds.

use super::*;

/// Runs until SIGTERM or SIGINT, then journals what is left and stops.
pub(super) async fn run(mut daemon: Daemon, inputs: Inputs) -> Result<()> {
    let Inputs {
        mut events,
        mut timer_events,
        mut service_events,
        checks: mut check_rx,
        log_matches: mut log_rx,
        mut service_scan,
        have_services,
        mut kernel_messages,
        mut sampler,
        mut repeat_interval,
        fallback_jumps: mut jump_rx,
        queries: mut query_rx,
        ntp,
        mut bound_refresh,
        mut bound_updates,
        mut seal_interval,
        mut vmclock_poll,
    } = inputs;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    // systemd's watchdog: pinged from this loop, so a loop that hangs is restarted.
    let watchdog_period = systemd::watchdog_period();
    // Without the watchdog the interval exists but its branch is off.
    let mut watchdog =
        tokio::time::interval(watchdog_period.unwrap_or(std::time::Duration::from_secs(3600)));
    if let Some(period) = watchdog_period {
        tracing::info!("systemd watchdog: pinging every {period:?}");
    }
    loop {
        tokio::select! {
            ready = readable(events.as_mut()), if events.is_some() => {
                let mut guard = ready?;
                // Bounded batches: a storm is journaled in steps of BATCH events, so memory
                // stays flat whatever the burst, and queries are answered in between.
                let (batch, emptied) = drain(guard.get_inner_mut(), decode_clock_event);
                daemon.process(batch).await;
                batch_done(guard, emptied).await;
            }
            ready = readable(timer_events.as_mut()), if timer_events.is_some() => {
                let mut guard = ready?;
                let (batch, emptied) = drain(guard.get_inner_mut(), TimerLateEvent::from_bytes);
                daemon.on_late_timers(batch);
                batch_done(guard, emptied).await;
            }
            ready = readable(service_events.as_mut()), if service_events.is_some() => {
                let mut guard = ready?;
                let (batch, emptied) = drain(guard.get_inner_mut(), ServiceExitEvent::from_bytes);
                daemon.on_service_exits(batch);
                batch_done(guard, emptied).await;
            }
            Some((service, outcome)) = check_rx.recv() => {
                let actions = daemon.services.on_check(service, outcome);
                daemon.apply_service_actions(actions);
            }
            Some(found) = log_rx.recv() => {
                let actions = daemon.services.on_log_match(found);
                daemon.apply_service_actions(actions);
            }
            _ = service_scan.tick(), if have_services => daemon.on_service_scan(),
            ready = readable(kernel_messages.as_mut()), if kernel_messages.is_some() => {
                let mut guard = ready?;
                match kmsg::read_available(guard.get_inner_mut(), false) {
                    Ok(messages) => daemon.on_kernel_messages(messages),
                    Err(err) => {
                        tracing::warn!("/dev/kmsg: {err}; no longer followed");
                        kernel_messages = None;
                        continue;
                    }
                }
                guard.clear_ready();
            }
            _ = sampler.tick() => {
                daemon.on_sample();
                // A vmclock device that appeared since (its driver loaded late).
                if vmclock_poll.is_none() {
                    vmclock_poll = daemon.vmclock_poll_interval();
                }
            }
            _ = repeat_interval.tick(), if events.is_some() => daemon.on_repeat_interval(),
            Some(jump) = jump_rx.recv() => daemon.on_fallback_jump(jump),
            Some(query) = query_rx.recv() => daemon.answer(query),
            _ = tick(bound_refresh.as_mut()), if bound_refresh.is_some() => daemon.bound_refresh(),
            changed = bound_changed(bound_updates.as_mut()), if bound_updates.is_some() => {
                match changed {
                    Some(update) => daemon.on_bound_update(update),
                    // The NTP service stopped: no more measurements.
                    None => bound_updates = None,
                }
            }
            _ = tick(seal_interval.as_mut()), if seal_interval.is_some() => daemon.seal("interval"),
            _ = tick(vmclock_poll.as_mut()), if vmclock_poll.is_some() => daemon.on_vmclock_poll(),
            _ = watchdog.tick(), if watchdog_period.is_some() => systemd::notify("WATCHDOG=1"),
            _ = sighup.recv() => {
                daemon.reload(None);
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }
    systemd::notify("STOPPING=1");
    // New repeats go to a new epoch while the ring buffer is drained; then, once no
    // program can still be counting into the old ones, every count is journaled.
    daemon.advance_repeat_epoch();
    // Whatever is still in the ring buffer is journaled before leaving.
    if let Some(ring) = events.as_mut() {
        loop {
            let (batch, emptied) = drain(ring.get_mut(), decode_clock_event);
            daemon.process(batch).await;
            if emptied {
                break;
            }
        }
    }
    crate::bpf::wait_for_running_programs();
    daemon.journal_repeats(u32::MAX);
    // The NTP service first: it writes the drift file and stops asking for corrections.
    if let Some(ntp) = &ntp {
        ntp.shutdown().await;
    }
    if let Some(slew) = &daemon.slew {
        slew.shutdown().await;
    }
    // A clean stop ends the guard with the daemon (a crash leaves it pinned, in force); a
    // restart leaves it to the next daemon (systemd::restart_pending).
    let pinned = daemon
        .probes
        .as_ref()
        .is_some_and(|p| p.pin_dir().is_some());
    let restarting = pinned && super::systemd::restart_pending().await;
    let guard_released = !restarting && daemon.probes.as_mut().is_some_and(Probes::release_pins);
    if restarting {
        tracing::info!("restarting: the pinned guard stays in force for the next daemon");
    }
    daemon.journal_and_publish(vec![daemon_record(
        "stop",
        json!({ "guard_released": guard_released, "restarting": restarting }),
    )]);
    // The last record: everything the daemon wrote is sealed when it stops.
    daemon.seal("stop");
    let _ = std::fs::remove_file(daemon.config.runtime_dir.join(HEARTBEAT_FILE));
    daemon.flush_unwritten();
    daemon.journal.sync().ok();
    let (head_seq, head_hash) = daemon.journal.head();
    tracing::info!("clockguard stopped; journal head seq {head_seq}, hash {head_hash}");
    Ok(())
}

/// A clock event as the journal takes it: an undecodable record stays, as `None` (it is
/// journaled as such, never dropped in silence).
fn decode_clock_event(bytes: &[u8]) -> Option<Option<ClockEvent>> {
    Some(ClockEvent::from_bytes(bytes))
}

/// Up to BATCH records from a ring buffer, each decoded by `decode` (a record it refuses,
/// a short one of another ABI, is skipped), and whether the ring was emptied: only then
/// may the arm's readiness be cleared. Counting the decoded records instead would take a
/// batch with a skipped record for the last one and leave the rest waiting for the next
/// event (tokio's readiness is edge-triggered).
fn drain<T>(ring: &mut RingBuf<MapData>, decode: fn(&[u8]) -> Option<T>) -> (Vec<T>, bool) {
    let mut out = Vec::with_capacity(BATCH.min(64));
    for _ in 0..BATCH {
        let Some(item) = ring.next() else {
            return (out, true);
        };
        out.extend(decode(&item));
    }
    (out, false)
}

/// After a batch from a ring buffer: an emptied ring's readiness is cleared (only then:
/// tokio's readiness is edge-triggered, see `drain`); one that is not empty yet lets the
/// runtime's other tasks run before its next batch. The daemon runs on one thread, and a
/// ring buffer that stays readable spends tokio's cooperative budget (128 polls) only
/// slowly: a storm's backlog, a batch per poll, kept the control socket, the slew engine
/// and the NTP server waiting for over 10 s on one emulated CPU (`clockguard status`:
/// "gave no answer within 10 s").
async fn batch_done<T: std::os::fd::AsRawFd>(
    mut guard: tokio::io::unix::AsyncFdReadyMutGuard<'_, T>,
    emptied: bool,
) {
    if emptied {
        guard.clear_ready();
    } else {
        tokio::task::yield_now().await;
    }
}

/// The next tick of an optional interval (never, without one).
async fn tick(interval: Option<&mut tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The NTP service's next news for the error bound; None once it has stopped.
async fn bound_changed(
    updates: Option<&mut tokio::sync::watch::Receiver<Option<clockguard_core::bound::Update>>>,
) -> Option<clockguard_core::bound::Update> {
    let updates = updates?;
    loop {
        updates.changed().await.ok()?;
        if let Some(update) = *updates.borrow_and_update() {
            return Some(update);
        }
    }
}

/// Readiness of an optional event source, for a `select!` arm that is disabled while the
/// source is absent (then it is never ready: no unwrap in the arm).
async fn readable<T: std::os::fd::AsRawFd>(
    source: Option<&mut AsyncFd<T>>,
) -> std::io::Result<tokio::io::unix::AsyncFdReadyMutGuard<'_, T>> {
    match source {
        Some(fd) => fd.readable_mut().await,
        None => std::future::pending().await,
    }
}
