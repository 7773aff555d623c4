//! The control socket's questions (status, services, recent records), the reload, and the
//! status report.

use super::*;

impl Daemon {
    pub(super) fn answer(&mut self, query: Query) {
        match query {
            Query::Status(reply) => {
                let _ = reply.send(Box::new(self.status()));
            }
            Query::Services(reply) => {
                let _ = reply.send(ServicesAnswer {
                    services: self.services.status(clock::monotonic()),
                });
            }
            Query::Recent(reply) => {
                let _ = reply.send(self.recent.iter().cloned().collect());
            }
            Query::Now(reply) => {
                let _ = reply.send(self.bound_answer());
            }
            Query::Reload { peer, reply } => {
                let _ = reply.send(self.reload(peer));
            }
        }
    }

    /// Reads the configuration again (SIGHUP, or `clockguard reload` from `peer`). The
    /// guard policy (allow, slew_instead, exclusive_discipline) is written into the kernel
    /// at once; other changes are listed as taking effect at the next restart. An invalid
    /// file changes nothing. Journaled as source "daemon", kind "reload", with the
    /// requester.
    pub(super) fn reload(&mut self, peer: Option<tokio::net::unix::UCred>) -> Value {
        systemd::notify(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}",
            clock::read_ns(libc::CLOCK_MONOTONIC) / 1000
        ));
        let answer = match self.config_source.load() {
            Ok((new, origin)) => self.apply_config(new, origin),
            Err(err) => {
                let why = format!("{err:#}; the configuration in use is kept");
                tracing::error!("reload: {why}");
                json!({ "error": why })
            }
        };
        systemd::notify("READY=1");
        let mut record = daemon_record("reload", answer.clone());
        if answer.get("error").is_some() {
            record.result = "EINVAL".into();
        }
        record.pid = peer.and_then(|p| p.pid()).map(|p| p as u32);
        record.uid = peer.map(|p| p.uid());
        if let Some(pid) = record.pid {
            record.comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .ok()
                .map(|c| c.trim_end().to_string());
            self.enricher.enrich(&mut record, 0);
        }
        self.journal_and_publish(vec![record]);
        answer
    }

    pub(super) fn apply_config(&mut self, new: Config, origin: String) -> Value {
        let ReloadPlan {
            applied,
            needs_restart,
        } = ReloadPlan::between(&self.config, &new);
        if !applied.is_empty() {
            let policy = guard::resolve_policy(&new.guard);
            if let Some(probes) = self.probes.as_mut() {
                let written = probes.set_guard(
                    self.enforcement.active,
                    new.guard.exclusive_discipline,
                    &policy,
                );
                if let Err(err) = written {
                    // Put back what was in force: the maps may hold half of the new policy.
                    let restored = probes.set_guard(
                        self.enforcement.active,
                        self.config.guard.exclusive_discipline,
                        &self.policy,
                    );
                    let why = format!(
                        "cannot write the new guard policy into the kernel ({err:#}); the \
                         policy in use is {}",
                        if restored.is_ok() {
                            "kept"
                        } else {
                            "damaged: restart clockguard"
                        }
                    );
                    tracing::error!("reload: {why}");
                    return json!({ "error": why });
                }
            }
            for entry in policy.iter().map(|e| &e.shown) {
                match &entry.problem {
                    None => {
                        tracing::info!("guard policy: {} {}", entry.class, entry.path.display());
                    }
                    Some(problem) => tracing::warn!(
                        "guard policy: {} {}: {problem}",
                        entry.class,
                        entry.path.display()
                    ),
                }
            }
            self.policy = policy;
            self.config.guard.allow = new.guard.allow;
            self.config.guard.slew_instead = new.guard.slew_instead;
            self.config.guard.exclusive_discipline = new.guard.exclusive_discipline;
            self.bound_policy_changed();
        }
        for key in &needs_restart {
            tracing::warn!("reload: {key} changed; it takes effect at the next restart");
        }
        tracing::info!(
            "reloaded {origin}: applied {}",
            if applied.is_empty() {
                "nothing".to_string()
            } else {
                applied.join(", ")
            }
        );
        self.config_origin.clone_from(&origin);
        json!({ "config": origin, "applied": applied, "needs_restart": needs_restart })
    }

    /// A `slew_instead` agent's step was refused in the kernel: apply what it asked for as a
    /// slew. Agents repeat their request while the clock is still off (VBoxService every
    /// 10 s, a cron'd ntpdate), each time measured against the clock as it is then, so a new
    /// request replaces what is still pending instead of adding to it.
    pub(super) async fn slew_instead(&mut self, record: &mut Record) {
        let Some(slew) = &self.slew else { return };
        let Some(requested) = record.requested_delta_ns else {
            record.slew = Some(json!({"refused": "the requested time is unknown"}));
            return;
        };
        self.stats.slews_requested += 1;
        let pending = slew.status().remaining_ns;
        // The bound widens before the clock starts to move.
        let slew = slew.clone();
        let bound_ns = self.bound_slewing_in(requested);
        match slew.replace(requested).await {
            Ok(status) => {
                record.verdict = Verdict::Slewed;
                record.slew = Some(json!({
                    "correction_ns": requested,
                    "replaced_pending_ns": pending,
                    "rate_ppm": status.rate_ppm,
                    "eta_s": status.eta_s,
                    // The clock error bound published as the slew began (null when no
                    // bound is kept): it holds the whole correction.
                    "bound_ns": bound_ns,
                }));
                tracing::info!(
                    "refused a {:+.6} s step by {} (pid {}): slewing it in instead",
                    requested as f64 / 1e9,
                    record.comm.as_deref().unwrap_or("?"),
                    record.pid.unwrap_or(0)
                );
            }
            Err(err) => {
                self.bound_slewing_in(0);
                self.stats.slews_refused += 1;
                tracing::error!(
                    "ALERT: refused a {:+.6} s step by {} (pid {}) and will not slew it: {err}",
                    requested as f64 / 1e9,
                    record.comm.as_deref().unwrap_or("?"),
                    record.pid.unwrap_or(0)
                );
                record.slew = Some(json!({"refused": err.to_string()}));
            }
        }
    }

    pub(super) fn enforcement(&self) -> EnforcementStatus {
        EnforcementStatus {
            active: self.enforcement.active,
            mode: self.enforcement.mode.into(),
            reason: self.enforcement.reason.clone(),
            gaps: self.enforcement.gaps.clone(),
            exclusive_discipline: self.enforcement.active && self.config.guard.exclusive_discipline,
            pinned: self
                .probes
                .as_ref()
                .and_then(|p| p.pin_dir())
                .map(Path::to_path_buf),
            not_pinned_because: self.not_pinned.clone(),
            self_exe: guard::self_exe(),
            policy: self.policy.iter().map(|e| e.shown.clone()).collect(),
            other_time_services: self.time_services.clone(),
            slew: self.slew.as_ref().map(SlewHandle::status),
        }
    }

    pub(super) fn status(&self) -> Status {
        let counters = self
            .probes
            .as_ref()
            .map(Probes::counters)
            .transpose()
            .unwrap_or_else(|err| {
                tracing::warn!("cannot read the kernel counters: {err:#}");
                None
            });
        let (head_seq, head_hash) = self.journal.head();
        let lsms = crate::lsm::active_lsms().clone();
        Status {
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            mode: self.enforcement.mode.into(),
            mode_configured: self.config.mode.as_str().into(),
            config: self.config_origin.clone(),
            started: self.started_wall.clone(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            state_dir: self.config.state_dir.clone(),
            runtime_dir: self.config.runtime_dir.clone(),
            journal: JournalStatus {
                path: self.journal.path().clone(),
                next_seq: self.journal.next_seq(),
                head_seq,
                head_hash: head_hash.into(),
                sealing: self.journal.sealing().map(|(key_id, epoch)| SealingStatus {
                    key_id,
                    epoch,
                    interval_s: self.config.audit.seal_interval_s,
                }),
            },
            enforcement: self.enforcement(),
            ebpf_load_error: self.load_error.clone(),
            kernel_release: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|r| r.trim().to_string()),
            bpf_lsm_active: lsms.bpf_active(),
            lsms,
            hooks: self.hooks.clone(),
            ring_buffer_drops: counters.map(|c| c.ring_buffer_drops),
            hook_misses: self.probes.as_ref().map(Probes::hook_misses),
            summaries: Summaries {
                repeats_in_full: self.config.audit.repeats_in_full,
                interval_ms: self.config.audit.summary_interval_ms,
                epoch: self.probes.is_some().then_some(self.repeat_epoch),
            },
            kernel: counters,
            ntp: NtpStatus {
                running: self.ntp.is_some(),
                servers: self.config.ntp.servers.clone(),
                pools: self.config.ntp.pools.clone(),
                nts_servers: self.config.ntp.nts_servers.clone(),
                nts_ke: self.config.ntp.nts_ke.clone(),
                serve: self.config.ntp.serve.clone(),
                disciplining: self.ntp.is_some() && self.slew.is_some(),
            },
            hook_costs: self
                .hook_stats
                .as_ref()
                .and(self.probes.as_ref())
                .map(Probes::hook_costs),
            timers: self.timers_status(counters.as_ref()),
            services: self.services.status(clock::monotonic()),
            vm: VmStatus {
                facts: vmfacts::read(Path::new("/sys"), Path::new("/proc")),
                kernel_clock_messages: self
                    .kernel_clock_messages
                    .as_ref()
                    .map(|m| m.iter().cloned().collect()),
                vmclock: self.vmclock.status(),
            },
            daemon: DaemonStats {
                journald_entries: self.journald.sent,
                journald_dropped: self.journald.dropped,
                ..self.stats.clone()
            },
            bound: self.bound_answer(),
        }
    }

    pub(super) fn timer_hook_attached(&self) -> bool {
        self.hooks
            .iter()
            .any(|h| h.name == "hrtimer_expire_entry" && h.attached)
    }

    pub(super) fn timers_status(&self, counters: Option<&bpf::Counters>) -> TimersStatus {
        let histogram = self
            .probes
            .as_ref()
            .filter(|_| self.timer_hook_attached())
            .and_then(|p| p.lateness_histogram().ok());
        TimersStatus {
            stall_threshold_ms: self.config.timers.stall_threshold_ms,
            sample_interval_ms: self.config.timers.sample_interval_ms,
            lateness: histogram.map(|h| LatenessSummary::from_buckets(&h.buckets, h.sum_ns)),
            late_events: counters.map(|c| c.timer_late_events),
            late_events_lost: counters.map(|c| c.timer_late_drops),
            read_faults: counters.map(|c| c.timer_read_faults),
            found: self.timers.stats.clone(),
        }
    }
}
