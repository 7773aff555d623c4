//! Loads the embedded eBPF object and attaches each hook on its own, so that one hook the
//! kernel refuses (fentry and LSM on a locked-down kernel: EPERM) never takes the others
//! down. Every hook's outcome, with the kernel's reason, is kept for `clockguard status`.

use std::{
    fs, io,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{anyhow, Context, Result};
use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf, StackTraceMap},
    programs::{
        links::{FdLink, PinnedLink},
        BtfTracePoint, FEntry, FExit, Lsm, TracePoint,
    },
    Btf, Ebpf, EbpfLoader,
};
use clockguard_core::config::EbpfLogLevel;
pub use clockguard_core::status::{Counters, HookCost, HookStatus};
use clockguard_ebpf as abi;

/// The eBPF object built by build.rs, embedded so the binary is self-contained.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("CLOCKGUARD_EBPF_OBJECT"));

/// What attaching a hook came to, recorded on its (core) status.
trait HookOutcome {
    fn settle(
        &mut self,
        disabled: bool,
        pins: &mut Option<Pins>,
        attach: impl FnOnce(Option<&Path>) -> Result<Option<PinnedLink>, AttachError>,
    );
    fn failed(&mut self, err: &(dyn std::error::Error + 'static));
}

impl HookOutcome for HookStatus {
    /// Records the outcome of one hook: disabled by the configuration, adopted from the
    /// pins of a previous daemon, attached (and pinned, with `pins`), or the kernel's
    /// reason for refusing it. `attach` gets the path to pin its link at.
    fn settle(
        &mut self,
        disabled: bool,
        pins: &mut Option<Pins>,
        attach: impl FnOnce(Option<&Path>) -> Result<Option<PinnedLink>, AttachError>,
    ) {
        if disabled {
            self.error = Some("disabled in the configuration".into());
            return;
        }
        if let Some(pins) = pins.as_mut() {
            if pins.adoptable.contains(&self.name) {
                match PinnedLink::from_pin(pins.link_path(&self.name)) {
                    Ok(link) => {
                        pins.links.push(link);
                        (self.attached, self.pinned, self.adopted) = (true, true, true);
                        return;
                    }
                    Err(err) => tracing::warn!(
                        "cannot adopt the pinned hook {}: {err}; attaching it anew",
                        self.name
                    ),
                }
            }
        }
        let pin_at = pins.as_ref().map(|p| p.link_path(&self.name));
        match attach(pin_at.as_deref()) {
            Ok(link) => {
                self.attached = true;
                if let (Some(link), Some(pins)) = (link, pins.as_mut()) {
                    pins.links.push(link);
                    self.pinned = true;
                }
            }
            Err(err) => self.failed(err.as_ref()),
        }
    }

    fn failed(&mut self, err: &(dyn std::error::Error + 'static)) {
        let (message, errno) = describe_error(err);
        self.error = Some(message);
        self.errno = errno;
    }
}

/// The audited clock syscalls. Each is seen by the fentry/fexit pair `fentry_<name>` and
/// `fexit_<name>` on `__x64_sys_<name>` where the kernel allows it, else by the tracepoints
/// `syscalls:sys_enter_<name>` and `sys_exit_<name>` (programs named alike). The
/// tracepoints are the fallback: while any syscall tracepoint is attached, every syscall
/// of every process goes through the kernel's tracing path (+40 ns each on the test host).
const AUDITED_SYSCALLS: &[&str] = &["clock_settime", "settimeofday", "adjtimex", "clock_adjtime"];

/// The other tracepoints as (category, name); each program is named after its tracepoint.
const TRACEPOINTS: &[(&str, &str)] = &[
    ("sched", "sched_process_fork"),
    ("sched", "sched_process_exec"),
    ("sched", "sched_process_exit"),
];

/// The tracepoints that read fields at offsets parsed from tracefs (`read_procinfo_layout`).
const NEEDS_PROCINFO_LAYOUT: &[&str] = &["sched_process_fork", "sched_process_exec"];

/// The guard's pins (guard mode): see pinning.rs.
pub struct Pins {
    /// This build's directory, /sys/fs/bpf/clockguard/<build>.
    pub dir: PathBuf,
    /// Hooks a previous daemon left pinned here, to adopt.
    adoptable: Vec<String>,
    /// Pins of other builds (or incomplete ones), released once the guard is in place.
    stale: Vec<PathBuf>,
    /// The pinned links, held while the daemon runs.
    links: Vec<PinnedLink>,
}

impl Pins {
    fn link_path(&self, hook: &str) -> PathBuf {
        self.dir.join("links").join(hook)
    }
}

pub struct Probes {
    ebpf: Ebpf,
    pub hooks: Vec<HookStatus>,
    /// In guard mode, until released (clean stop, or the guard not enforcing).
    pins: Option<Pins>,
    /// Links unpinned by `release_pins`: attached as long as the daemon holds them.
    released_links: Vec<FdLink>,
    kernel_symbols: crate::ksyms::KernelSymbols,
    /// What the CONFIG map holds (the guard flags are changed after attaching).
    config: abi::Config,
    /// Why the guard cannot identify a caller's executable (no kernel BTF, a member
    /// missing), or None when it can.
    pub exe_layout_error: Option<String>,
    /// The programs' log, when `ebpf_log_level` is not off (taken by the daemon to read).
    ebpf_log: Option<EbpfLogReader>,
}

pub struct LoadOptions<'a> {
    pub disabled_hooks: &'a [String],
    pub emit_readonly: bool,
    pub tracefs: &'a Path,
    /// hrtimer expiries late by this much or more are sent as events (ns).
    pub timer_late_threshold_ns: u64,
    /// Pin every link and map in bpffs, adopting a previous daemon's (guard mode).
    pub pin: bool,
    /// Repeats of a key sent in full per summary interval (0: no summarising).
    pub repeats_in_full: u32,
    pub ebpf_log_level: EbpfLogLevel,
}

/// What reads the eBPF programs' log records into the daemon's log (`ebpf_log_level`).
pub type EbpfLogReader = aya_log::EbpfLogger<&'static dyn log::Log>;

/// aya-log-ebpf's AYA_LOG_LEVEL for `level`: a record is sent when its level (1 error ..
/// 5 trace) is at most this; 0 sends none.
fn aya_log_level(level: EbpfLogLevel) -> u8 {
    use aya_log::Level;
    match level {
        EbpfLogLevel::Off => 0,
        EbpfLogLevel::Error => Level::Error as u8,
        EbpfLogLevel::Warn => Level::Warn as u8,
        EbpfLogLevel::Info => Level::Info as u8,
        EbpfLogLevel::Debug => Level::Debug as u8,
        EbpfLogLevel::Trace => Level::Trace as u8,
    }
}

impl Probes {
    /// Loads the object and attaches every hook not disabled. Fails only when the object
    /// itself cannot be loaded (no BPF at all); a refused hook is recorded, not fatal.
    pub fn load(opts: &LoadOptions) -> Result<Probes> {
        // Parsed only to pin: the loader parses the object again anyway.
        let map_names = if opts.pin {
            object_map_names()?
        } else {
            Vec::new()
        };
        let mut pins = if opts.pin {
            match prepare_pins(&map_names) {
                Ok(pins) => Some(pins),
                Err(err) => {
                    tracing::warn!("the guard is not pinned, it ends with the daemon: {err:#}");
                    None
                }
            }
        } else {
            // Not guarding: a guard an earlier daemon left pinned must not outlive its mode.
            let released = crate::pinning::release_all(Path::new(crate::pinning::PIN_ROOT));
            if released > 0 {
                tracing::warn!(
                    "released the guard an earlier clockguard left pinned ({released} \
                     director{}): this daemon does not run in guard mode",
                    if released == 1 { "y" } else { "ies" }
                );
            }
            None
        };
        // aya-log-ebpf sends every level unless told otherwise. The level is a constant of
        // the loaded object (.rodata), so at 0 the verifier removes the logging code as
        // dead: logging off costs the programs nothing.
        let log_level = aya_log_level(opts.ebpf_log_level);
        let mut loader = EbpfLoader::new();
        loader.override_global(aya_log::LEVEL, &log_level, true);
        if let Some(pins) = &pins {
            // Every map by name: a previous daemon's when pinned, else created and pinned.
            for name in &map_names {
                loader.map_pin_path(name.as_str(), pins.dir.join("maps").join(name));
            }
        }
        let mut ebpf = loader
            .load(EBPF_OBJECT)
            .map_err(|e| anyhow!("{}", describe_error(&e).0))
            .context("cannot load clockguard's eBPF object (maps)")?;

        let mut flags = 0;
        if opts.emit_readonly {
            flags |= abi::CONFIG_EMIT_READONLY;
        }
        let mut config = abi::Config {
            flags,
            self_tgid: std::process::id(),
            repeats_in_full: opts.repeats_in_full,
            ..Default::default()
        };
        // Parsed once (several MB) for every offset the hooks need: the guard's and the
        // hrtimer hook's.
        let kernel_btf = crate::btf::KernelBtf::from_sys();
        let exe_layout_error = match kernel_btf
            .as_ref()
            .map_err(|err| anyhow!("{err:#}"))
            .and_then(crate::guard::exe_offsets)
        {
            Ok(offsets) => {
                config.exe_offsets = offsets;
                config.flags |= abi::CONFIG_EXE_LAYOUT;
                None
            }
            Err(err) => Some(format!("{err:#}")),
        };
        // Without it a service's exit is still reported, with an unknown status.
        match kernel_btf
            .as_ref()
            .map_err(|err| anyhow!("{err:#}"))
            .and_then(|btf| btf.member_offset("task_struct", "exit_code"))
            .and_then(|at| Ok(u16::try_from(at)?))
        {
            Ok(offset) => {
                config.task_exit_code_offset = offset;
                config.flags |= abi::CONFIG_EXIT_CODE_LAYOUT;
            }
            Err(err) => tracing::warn!("exit statuses of tracked services unknown: {err:#}"),
        }
        let layout_problem = match read_procinfo_layout(opts.tracefs) {
            Ok(layout) => {
                layout.apply(&mut config);
                None
            }
            Err(err) => Some(format!("{err:#}")),
        };
        let mut config_map: Array<_, abi::Config> =
            Array::try_from(ebpf.map_mut("CONFIG").context("no CONFIG map")?)?;
        if pins.as_ref().is_some_and(|p| !p.adoptable.is_empty()) {
            // The adopted programs keep enforcing until the guard is decided again.
            if let Ok(previous) = config_map.get(&0, 0) {
                config.flags |= previous.flags
                    & (abi::CONFIG_GUARD_ENFORCE | abi::CONFIG_GUARD_EXCLUSIVE_DISCIPLINE);
            }
        }
        config_map.set(0, config, 0)?;
        let mut last_offset: Array<_, i64> =
            Array::try_from(ebpf.map_mut("LAST_OFFSET").context("no LAST_OFFSET map")?)?;
        last_offset.set(0, crate::clock::tai_minus_monotonic_ns(), 0)?;
        last_offset.set(1, 1, 0)?;

        let mut hooks = Vec::new();
        let disabled = |name: &str| opts.disabled_hooks.iter().any(|d| d == name);

        // Read once for every BTF-based hook; an Arc keeps the error (and its errno) for each.
        let btf = Btf::from_sys_fs().map_err(Arc::new);
        let btf = || -> Result<&Btf, AttachError> {
            btf.as_ref()
                .map_err(|err| Box::new(err.clone()) as AttachError)
        };
        for syscall in AUDITED_SYSCALLS {
            let function = format!("__x64_sys_{syscall}");
            let pair = [
                (format!("fentry_{syscall}"), "fentry"),
                (format!("fexit_{syscall}"), "fexit"),
            ];
            let mut both_attached = true;
            for (name, kind) in &pair {
                let mut status = HookStatus::new(name, kind, format!("{function}()"));
                status.settle(disabled(name), &mut pins, |pin| {
                    if !cfg!(target_arch = "x86_64") {
                        // The programs read the arguments from x86-64's struct pt_regs.
                        return Err("the syscall entry points are hooked on x86-64 only".into());
                    }
                    if *kind == "fentry" {
                        attach_fentry(&mut ebpf, name, &function, btf()?, pin)
                    } else {
                        attach_fexit(&mut ebpf, name, &function, btf()?, pin)
                    }
                });
                both_attached &= status.attached;
                hooks.push(status);
            }
            for side in ["enter", "exit"] {
                let program = format!("sys_{side}_{syscall}");
                let mut status =
                    HookStatus::new(&program, "tracepoint", format!("syscalls:{program}"));
                if both_attached {
                    // Attached anyway, they would still make one event per call (the
                    // programs share their pending call), but tax every other syscall.
                    status.replaced_by = Some(format!("{} + {}", pair[0].0, pair[1].0));
                } else {
                    status.settle(disabled(&program), &mut pins, |pin| {
                        attach_tracepoint(&mut ebpf, "syscalls", &program, pin)
                    });
                }
                hooks.push(status);
            }
        }
        for &(category, program) in TRACEPOINTS {
            let mut status =
                HookStatus::new(program, "tracepoint", format!("{category}:{program}"));
            status.settle(disabled(program), &mut pins, |pin| {
                if NEEDS_PROCINFO_LAYOUT.contains(&program) {
                    if let Some(problem) = &layout_problem {
                        return Err(problem.clone().into());
                    }
                }
                attach_tracepoint(&mut ebpf, category, program, pin)
            });
            hooks.push(status);
        }

        let mut fentry = HookStatus::new("clock_was_set", "fentry", "clock_was_set()".into());
        fentry.settle(disabled("clock_was_set"), &mut pins, |pin| {
            attach_fentry(&mut ebpf, "clock_was_set", "clock_was_set", btf()?, pin)
        });
        hooks.push(fentry);

        // The guard: ADJ_SETOFFSET is judged in the LSM `capable` hook while the thread is
        // inside do_adjtimex (fentry keeps the modes, fexit forgets them).
        let mut adjtimex = HookStatus::new("do_adjtimex", "fentry", "do_adjtimex()".into());
        adjtimex.settle(disabled("do_adjtimex"), &mut pins, |pin| {
            attach_fentry(&mut ebpf, "do_adjtimex", "do_adjtimex", btf()?, pin)
        });
        hooks.push(adjtimex);
        let mut adjtimex_exit =
            HookStatus::new("do_adjtimex_exit", "fexit", "do_adjtimex()".into());
        adjtimex_exit.settle(disabled("do_adjtimex_exit"), &mut pins, |pin| {
            attach_fexit(&mut ebpf, "do_adjtimex_exit", "do_adjtimex", btf()?, pin)
        });
        hooks.push(adjtimex_exit);

        let mut hrtimer = HookStatus::new(
            "hrtimer_expire_entry",
            "tp_btf",
            "timer:hrtimer_expire_entry".into(),
        );
        // Where this kernel keeps the fields the hook reads (they moved in 7.x).
        let timer_config = kernel_btf
            .as_ref()
            .map_err(|err| format!("{err:#}"))
            .and_then(|btf| {
                crate::timers::hrtimer_offsets(btf, opts.timer_late_threshold_ns)
                    .map_err(|err| format!("{err:#}"))
            });
        hrtimer.settle(disabled("hrtimer_expire_entry"), &mut pins, |pin| {
            let timer_config = timer_config.clone()?;
            let mut map: Array<_, abi::TimerConfig> =
                Array::try_from(ebpf.map_mut("TIMER_CONFIG").ok_or("no TIMER_CONFIG map")?)?;
            map.set(0, timer_config, 0)?;
            let prog: &mut BtfTracePoint = program(&mut ebpf, "hrtimer_expire_entry")?;
            prog.load("hrtimer_expire_entry", btf()?)?;
            let link = prog.attach()?;
            pin_link(pin, || Ok(prog.take_link(link)?.into()))
        });
        if let (true, Ok(c)) = (hrtimer.attached, &timer_config) {
            hrtimer.target.push_str(&format!(
                " (struct hrtimer: _softexpires at {}, function at {}, base at {}; now {})",
                c.hrtimer_block + 8 * u16::from(c.softexpires_word),
                c.hrtimer_block + 8 * u16::from(c.function_word),
                c.hrtimer_block + 8 * u16::from(c.base_word),
                if c.flags & abi::TIMER_CONFIG_NOW_BY_VALUE != 0 {
                    "by value"
                } else {
                    "by pointer"
                }
            ));
        }
        hooks.push(hrtimer);

        let lsms = crate::lsm::active_lsms();
        for (hook, target) in [
            ("settime", "security_settime64"),
            ("capable", "security_capable"),
        ] {
            let mut lsm = HookStatus::new(hook, "lsm", target.into());
            lsm.settle(disabled(hook), &mut pins, |pin| {
                attach_lsm(&mut ebpf, hook, btf()?, pin)
            });
            // Loading "succeeds" where bpf is not an active LSM, but the hook is never
            // called: say so.
            if lsm.attached && lsms.bpf_active() == Some(false) {
                lsm.error = Some(format!(
                    "attached, but `bpf` is not among the active LSMs ({}, from {}): the \
                     hook is never called (boot with lsm=...,bpf)",
                    lsms.list.as_deref().unwrap_or_default().join(","),
                    lsms.source
                ));
            }
            hooks.push(lsm);
        }

        if let Some(pins) = &pins {
            // Pinned hooks not adopted (disabled since): their programs stop now.
            for name in &pins.adoptable {
                if !hooks.iter().any(|h| h.name == *name && h.adopted) {
                    let _ = fs::remove_file(pins.link_path(name));
                }
            }
        }
        // Taken once every program is loaded: the reader owns the log's map descriptor.
        let ebpf_log = match opts.ebpf_log_level {
            EbpfLogLevel::Off => None,
            level => match aya_log::EbpfLogger::init(&mut ebpf) {
                Ok(reader) => {
                    tracing::info!("ebpf_log_level = {level:?}: the eBPF programs' log follows");
                    Some(reader)
                }
                Err(err) => {
                    tracing::warn!("ebpf_log_level: cannot read the eBPF programs' log: {err}");
                    None
                }
            },
        };
        Ok(Probes {
            ebpf,
            hooks,
            pins,
            released_links: Vec::new(),
            kernel_symbols: Default::default(),
            config,
            exe_layout_error,
            ebpf_log,
        })
    }

    /// The reader of the programs' log (once; None when `ebpf_log_level` is off).
    pub fn take_ebpf_log(&mut self) -> Option<EbpfLogReader> {
        self.ebpf_log.take()
    }

    /// The outcome of the hook named `name`.
    pub fn hook(&self, name: &str) -> Option<&HookStatus> {
        self.hooks.iter().find(|h| h.name == name)
    }

    /// The pin directory while the guard is pinned.
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pins.as_ref().map(|p| p.dir.as_path())
    }

    /// Releases the pins of other builds (an upgrade) or incomplete ones: called once this
    /// daemon's guard is in place, so the two overlap. Returns the directories released.
    pub fn release_stale_pins(&mut self) -> Vec<PathBuf> {
        let Some(pins) = self.pins.as_mut() else {
            return Vec::new();
        };
        let mut released = Vec::new();
        for dir in std::mem::take(&mut pins.stale) {
            match crate::pinning::release(&dir) {
                Ok(()) => released.push(dir),
                Err(err) => tracing::warn!("{err:#}"),
            }
        }
        released
    }

    /// Unpins every link and map: the hooks stay attached while the daemon runs, and end
    /// with it (a clean stop, or a guard that does not enforce). Returns whether this
    /// daemon's guard was pinned.
    pub fn release_pins(&mut self) -> bool {
        self.release_stale_pins();
        let Some(pins) = self.pins.take() else {
            return false;
        };
        for link in pins.links {
            match link.unpin() {
                Ok(link) => self.released_links.push(link),
                Err(err) => tracing::warn!("cannot unpin a link in {}: {err}", pins.dir.display()),
            }
        }
        for hook in &mut self.hooks {
            hook.pinned = false;
        }
        if let Err(err) = crate::pinning::release(&pins.dir) {
            tracing::warn!("{err:#}");
        }
        true
    }

    /// Writes the guard's policy into the kernel: the executables by inode, then the flags
    /// (enforce, exclusive discipline). The map is filled before enforcement is switched
    /// on, so an allowed program is never refused in between.
    pub fn set_guard(
        &mut self,
        enforce: bool,
        exclusive_discipline: bool,
        policy: &[crate::guard::PolicyEntry],
    ) -> Result<()> {
        let mut exes: HashMap<_, abi::ExeKey, u16> = HashMap::try_from(
            self.ebpf
                .map_mut("GUARD_EXES")
                .context("no GUARD_EXES map")?,
        )?;
        let stale: Vec<abi::ExeKey> = exes.keys().filter_map(Result::ok).collect();
        for key in stale {
            if !policy.iter().any(|e| e.key == Some(key)) {
                exes.remove(&key)?;
            }
        }
        for entry in policy {
            if let Some(key) = entry.key {
                exes.insert(key, entry.class_id, 0).with_context(|| {
                    format!(
                        "cannot add {} to the guard policy",
                        entry.shown.path.display()
                    )
                })?;
            }
        }
        let mut config = self.config;
        config.flags &= !(abi::CONFIG_GUARD_ENFORCE | abi::CONFIG_GUARD_EXCLUSIVE_DISCIPLINE);
        if enforce {
            config.flags |= abi::CONFIG_GUARD_ENFORCE;
            if exclusive_discipline {
                config.flags |= abi::CONFIG_GUARD_EXCLUSIVE_DISCIPLINE;
            }
        }
        let mut config_map: Array<_, abi::Config> =
            Array::try_from(self.ebpf.map_mut("CONFIG").context("no CONFIG map")?)?;
        config_map.set(0, config, 0)?;
        self.config = config;
        Ok(())
    }

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

/// Waits until every eBPF program that was running when it was called has finished: a
/// global membarrier is an RCU grace period, and every tracing, tracepoint and LSM program
/// runs inside an RCU read-side section, even where it can be preempted. Where the kernel
/// refuses it (nohz_full CPUs), the summary interval's own wait stands alone.
pub fn wait_for_running_programs() {
    if let Err(err) = clockguard_sys::membarrier_global() {
        tracing::debug!("membarrier(MEMBARRIER_CMD_GLOBAL): {err}");
    }
}

type AttachError = Box<dyn std::error::Error + Send + Sync>;

/// The program `name` of the object, as its concrete type.
fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, AttachError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the object"))?;
    Ok(prog.try_into()?)
}

/// The attached link taken out of its program and pinned at `pin`, when given; else the
/// link stays with its program (and ends with the daemon).
fn pin_link(
    pin: Option<&Path>,
    take: impl FnOnce() -> Result<FdLink, AttachError>,
) -> Result<Option<PinnedLink>, AttachError> {
    let Some(path) = pin else {
        return Ok(None);
    };
    Ok(Some(take()?.pin(path)?))
}

fn attach_tracepoint(
    ebpf: &mut Ebpf,
    category: &str,
    name: &str,
    pin: Option<&Path>,
) -> Result<Option<PinnedLink>, AttachError> {
    let prog: &mut TracePoint = program(ebpf, name)?;
    prog.load()?;
    let link = prog.attach(category, name)?;
    // Before BPF perf links (Linux 5.15) a tracepoint's link is a perf event fd, which
    // cannot be pinned: it stays with the daemon.
    let pin = pin.filter(|_| aya::features().bpf_perf_link());
    pin_link(pin, || Ok(FdLink::try_from(prog.take_link(link)?)?))
}

/// An fentry program `name` on the kernel function `function`.
fn attach_fentry(
    ebpf: &mut Ebpf,
    name: &str,
    function: &str,
    btf: &Btf,
    pin: Option<&Path>,
) -> Result<Option<PinnedLink>, AttachError> {
    let prog: &mut FEntry = program(ebpf, name)?;
    prog.load(function, btf)?;
    let link = prog.attach()?;
    pin_link(pin, || Ok(prog.take_link(link)?.into()))
}

/// An fexit program `name` on the kernel function `function`.
fn attach_fexit(
    ebpf: &mut Ebpf,
    name: &str,
    function: &str,
    btf: &Btf,
    pin: Option<&Path>,
) -> Result<Option<PinnedLink>, AttachError> {
    let prog: &mut FExit = program(ebpf, name)?;
    prog.load(function, btf)?;
    let link = prog.attach()?;
    pin_link(pin, || Ok(prog.take_link(link)?.into()))
}

/// LSM programs are named after their hook.
fn attach_lsm(
    ebpf: &mut Ebpf,
    hook: &str,
    btf: &Btf,
    pin: Option<&Path>,
) -> Result<Option<PinnedLink>, AttachError> {
    let prog: &mut Lsm = program(ebpf, hook)?;
    prog.load(hook, btf)?;
    let link = prog.attach()?;
    pin_link(pin, || Ok(prog.take_link(link)?.into()))
}

/// The names of the object's maps (to pin each by name before loading).
fn object_map_names() -> Result<Vec<String>> {
    let object = aya_obj::Object::parse(EBPF_OBJECT)
        .map_err(|e| anyhow!("cannot parse clockguard's eBPF object: {e}"))?;
    let mut names: Vec<String> = object
        .maps
        .keys()
        .filter(|name| !name.starts_with('.'))
        .cloned()
        .collect();
    names.sort();
    Ok(names)
}

/// Mounts bpffs if needed, looks at what earlier daemons pinned, and makes this build's
/// directories.
fn prepare_pins(map_names: &[String]) -> Result<Pins> {
    crate::pinning::ensure_bpffs()?;
    let root = Path::new(crate::pinning::PIN_ROOT);
    let dir = crate::pinning::build_dir(root, EBPF_OBJECT);
    let found = crate::pinning::survey(root, &dir, map_names)?;
    for sub in ["links", "maps"] {
        fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
    }
    Ok(Pins {
        dir,
        adoptable: found.adoptable,
        stale: found.stale,
        links: Vec::new(),
    })
}

/// The whole error chain as one message, and the errno of the innermost io::Error.
pub fn describe_error(err: &(dyn std::error::Error + 'static)) -> (String, Option<String>) {
    let mut parts = Vec::new();
    let mut errno = None;
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.iter().any(|p: &String| p.contains(&text)) {
            parts.push(text);
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(code) = io.raw_os_error() {
                errno = Some(crate::record::errno_name(code));
            }
        }
        current = e.source();
    }
    let mut message = parts.join(": ");
    // aya appends "Verifier output:" even when the kernel gave none (EPERM at load).
    let trimmed = message
        .trim_end()
        .trim_end_matches("Verifier output:")
        .trim_end();
    message.truncate(trimmed.trim_end_matches('.').len());
    if let Some(name) = &errno {
        if !message.contains(name.as_str()) {
            message = format!("{name}: {message}");
        }
    }
    (message, errno)
}

/// Where the fork/exec tracepoints keep the fields we read, parsed from tracefs.
#[derive(Debug, PartialEq, Eq)]
pub struct ProcInfoLayout {
    pub parent_comm_offset: u16,
    pub parent_comm_dataloc: bool,
    pub child_pid_offset: u16,
    pub exec_filename_offset: u16,
}

impl ProcInfoLayout {
    fn apply(&self, config: &mut abi::Config) {
        config.flags |= abi::CONFIG_PROCINFO_LAYOUT;
        config.fork_parent_comm_offset = self.parent_comm_offset;
        config.fork_parent_comm_dataloc = u16::from(self.parent_comm_dataloc);
        config.fork_child_pid_offset = self.child_pid_offset;
        config.exec_filename_offset = self.exec_filename_offset;
    }
}

fn read_procinfo_layout(tracefs: &Path) -> Result<ProcInfoLayout> {
    let read = |event: &str| {
        let path = tracefs.join("events/sched").join(event).join("format");
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
    };
    parse_procinfo_layout(&read("sched_process_fork")?, &read("sched_process_exec")?)
}

/// A field of a tracefs `format` file: (offset, declaration).
fn format_field<'a>(format: &'a str, name: &str) -> Option<(u16, &'a str)> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?.split(';').next()?;
        let field_name = decl.rsplit([' ', '*']).next()?.split('[').next()?;
        if field_name != name {
            return None;
        }
        let offset = line
            .split("offset:")
            .nth(1)?
            .split(';')
            .next()?
            .parse()
            .ok()?;
        Some((offset, decl))
    })
}

pub fn parse_procinfo_layout(fork: &str, exec: &str) -> Result<ProcInfoLayout> {
    let (parent_comm_offset, decl) =
        format_field(fork, "parent_comm").context("sched_process_fork has no parent_comm field")?;
    let (child_pid_offset, _) =
        format_field(fork, "child_pid").context("sched_process_fork has no child_pid field")?;
    let (exec_filename_offset, exec_decl) =
        format_field(exec, "filename").context("sched_process_exec has no filename field")?;
    if !exec_decl.contains("__data_loc") {
        return Err(anyhow!(
            "sched_process_exec's filename is `{exec_decl}`, not a __data_loc"
        ));
    }
    Ok(ProcInfoLayout {
        parent_comm_offset,
        parent_comm_dataloc: decl.contains("__data_loc"),
        child_pid_offset,
        exec_filename_offset,
    })
}

/// Mounts tracefs at /sys/kernel/tracing when no tracefs is visible (aya resolves
/// tracepoint ids through it). Returns the tracefs path in use.
pub fn ensure_tracefs() -> Result<&'static Path> {
    for candidate in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(candidate).join("events").is_dir() {
            return Ok(Path::new(candidate));
        }
    }
    clockguard_sys::mount_pseudo_fs("nodev", Path::new("/sys/kernel/tracing"), "tracefs")
        .context("tracefs is not mounted and mounting it at /sys/kernel/tracing failed")?;
    Ok(Path::new("/sys/kernel/tracing"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_map_the_daemon_and_the_guard_share_is_pinned_by_name() {
        let names = object_map_names().unwrap();
        for map in [
            "CONFIG",
            "COUNTERS",
            "EVENTS",
            "GUARD_EXES",
            "PENDING",
            "REPEATS",
            "REPEAT_EPOCH",
            "STACKS",
        ] {
            assert!(names.iter().any(|n| n == map), "{map} not in {names:?}");
        }
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    }

    const FORK_6_1: &str = "name: sched_process_fork
ID: 300
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:1;
\tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:1;
\tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;
";
    const FORK_6_18: &str = "format:
\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;
\tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;
\tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;
\tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;
";
    const EXEC: &str = "format:
\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;
\tfield:pid_t pid;\toffset:12;\tsize:4;\tsigned:1;
\tfield:pid_t old_pid;\toffset:16;\tsize:4;\tsigned:1;
";

    #[test]
    fn fork_layout_of_6_1_has_inline_comm() {
        let l = parse_procinfo_layout(FORK_6_1, EXEC).unwrap();
        assert_eq!(
            l,
            ProcInfoLayout {
                parent_comm_offset: 8,
                parent_comm_dataloc: false,
                child_pid_offset: 44,
                exec_filename_offset: 8,
            }
        );
    }

    #[test]
    fn fork_layout_of_6_18_has_data_loc_comm() {
        let l = parse_procinfo_layout(FORK_6_18, EXEC).unwrap();
        assert!(l.parent_comm_dataloc);
        assert_eq!(l.child_pid_offset, 20);
    }

    #[test]
    fn missing_field_is_named() {
        let err = parse_procinfo_layout("format:\n", EXEC)
            .unwrap_err()
            .to_string();
        assert!(err.contains("parent_comm"), "{err}");
    }

    #[test]
    fn error_chain_names_the_errno() {
        let io = io::Error::from_raw_os_error(libc::EPERM);
        let (message, errno) = describe_error(&io);
        assert_eq!(errno.as_deref(), Some("EPERM"));
        assert!(
            message.starts_with("EPERM") || message.contains("EPERM"),
            "{message}"
        );
    }
}
