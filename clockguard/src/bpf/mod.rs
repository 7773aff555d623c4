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

mod attach;
mod maps;
mod tracefs;

pub use attach::describe_error;
use attach::{
    attach_fentry, attach_fexit, attach_lsm, attach_tracepoint, pin_link, program, AttachError,
    HookOutcome,
};
pub use tracefs::ensure_tracefs;
use tracefs::read_procinfo_layout;

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
                match crate::guard::self_identity() {
                    Ok(key) => {
                        config.self_exe = key;
                        config.flags |= abi::CONFIG_SELF_EXE;
                    }
                    Err(err) => tracing::warn!(
                        "clockguard's own executable is unknown ({err}): the guard knows the \
                         daemon by its pid alone"
                    ),
                }
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
            // Which of fentry, fexit attached: each tracepoint stands in for its side.
            let mut attached = [false, false];
            for (side, (name, kind)) in pair.iter().enumerate() {
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
                attached[side] = status.attached;
                hooks.push(status);
            }
            for (side, direction) in ["enter", "exit"].into_iter().enumerate() {
                let program = format!("sys_{direction}_{syscall}");
                let mut status =
                    HookStatus::new(&program, "tracepoint", format!("syscalls:{program}"));
                if attached[side] {
                    // Never both for one side: two exits would send a call twice (the
                    // second finds no pending call and takes the call's enter run for
                    // skipped). The tracepoint would also tax every other syscall.
                    status.replaced_by = Some(pair[side].0.clone());
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
}
