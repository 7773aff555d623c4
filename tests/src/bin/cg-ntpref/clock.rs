//! The clocks read (CLOCK_REALTIME, CLOCK_MONOTONIC_RAW), NTP timestamps, and the reference clock
//! derived from CLOCK_MONOTONIC_RAW that `serve`, `offset` and `watch` share through the
//! params file.

use super::*;

pub(crate) fn realtime_ns() -> i64 {
    read_ns(libc::CLOCK_REALTIME)
}

pub(crate) fn raw_ns() -> i64 {
    read_ns(libc::CLOCK_MONOTONIC_RAW)
}

/// CLOCK_REALTIME read between two CLOCK_MONOTONIC_RAW reads: (realtime, raw midpoint).
pub(crate) fn realtime_and_raw() -> (i64, i64) {
    let r1 = raw_ns();
    let real = realtime_ns();
    let r2 = raw_ns();
    (real, r1 + (r2 - r1) / 2)
}

/// Unix time in ns to an NTP timestamp: seconds since 1900 (modulo the era) in the high
/// 32 bits, the fraction of a second in units of 2^-32 s in the low 32, rounded to nearest.
pub(crate) fn unix_ns_to_ntp(ns: i128) -> u64 {
    let mut secs = ns.div_euclid(NS_PER_S) + NTP_UNIX_OFFSET_S;
    let sub_ns = ns.rem_euclid(NS_PER_S);
    let mut frac = ((sub_ns << 32) + NS_PER_S / 2) / NS_PER_S;
    if frac >= 1 << 32 {
        // Cannot happen for sub_ns < 1e9 (the largest rounds to 2^32 - 4), kept for safety.
        frac -= 1 << 32;
        secs += 1;
    }
    ((secs.rem_euclid(1 << 32) as u64) << 32) | frac as u64
}

/// NTP timestamp to Unix time in ns, rounded to nearest; the era is the one that puts the
/// result nearest to `pivot_ns` (a Unix time known to be within 68 years of it).
pub(crate) fn ntp_to_unix_ns(ts: u64, pivot_ns: i128) -> i128 {
    let secs = i128::from(ts >> 32);
    let frac = i128::from(ts & 0xffff_ffff);
    let base = (secs - NTP_UNIX_OFFSET_S) * NS_PER_S + ((frac * NS_PER_S + (1 << 31)) >> 32);
    let eras = (pivot_ns - base + ERA_NS / 2).div_euclid(ERA_NS);
    base + eras * ERA_NS
}

/// The reference clock: a function of CLOCK_MONOTONIC_RAW, see the module comment.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RefClock {
    pub(crate) k_ns: i64,
    pub(crate) raw0_ns: i64,
    pub(crate) offset_ns: i64,
    pub(crate) freq_ppm: f64,
    /// A leap second applied at a midnight UTC: (the midnight, Unix s; +1 inserted, −1
    /// deleted). From then on the reference reads UTC with it, as a kernel does: an
    /// inserted second is 23:59:59 twice, a deleted one is skipped.
    pub(crate) leap: Option<(i64, i64)>,
    /// Steps of the reference's own time (`step`): (CLOCK_MONOTONIC_RAW ns from which it
    /// applies, ns), in the order they were made.
    pub(crate) steps: Vec<(i64, i64)>,
}

/// One comparison of the system clock with the reference clock.
pub(crate) struct OffsetSample {
    pub(crate) offset_ns: i64,
    pub(crate) realtime_ns: i64,
    pub(crate) ref_ns: i64,
}

impl RefClock {
    /// A reference clock starting now: `offset_ns` ahead of CLOCK_REALTIME, running
    /// `freq_ppm` fast against CLOCK_MONOTONIC_RAW.
    pub(crate) fn start(offset_ns: i64, freq_ppm: f64, leap: Option<(i64, i64)>) -> RefClock {
        let (real, raw) = realtime_and_raw();
        RefClock {
            k_ns: real - raw,
            raw0_ns: raw,
            offset_ns,
            freq_ppm,
            leap,
            steps: Vec::new(),
        }
    }

    /// The reference's continuous time (no leap second applied) at `raw_ns`, Unix ns.
    pub(crate) fn continuous_at(&self, raw_ns: i64) -> i128 {
        let elapsed = (i128::from(raw_ns) - i128::from(self.raw0_ns)) as f64;
        let drift = (elapsed * self.freq_ppm / 1e6).round() as i128;
        let stepped: i128 = self
            .steps
            .iter()
            .filter(|(from_raw_ns, _)| raw_ns >= *from_raw_ns)
            .map(|(_, by_ns)| i128::from(*by_ns))
            .sum();
        i128::from(self.k_ns) + i128::from(raw_ns) + i128::from(self.offset_ns) + drift + stepped
    }

    /// Whether the leap second is behind at `raw_ns` (a deleted second goes at 23:59:59).
    pub(crate) fn leap_applied(&self, raw_ns: i64) -> Option<i64> {
        let (midnight_s, delta_s) = self.leap?;
        let applied_s = if delta_s > 0 {
            midnight_s
        } else {
            midnight_s - 1
        };
        (self.continuous_at(raw_ns) >= i128::from(applied_s) * NS_PER_S).then_some(delta_s)
    }

    /// The leap indicator to send at `raw_ns`: `announced` until the leap second (when
    /// there is one to apply), nothing after it.
    pub(crate) fn leap_indicator(&self, announced: u8, raw_ns: i64) -> u8 {
        match self.leap_applied(raw_ns) {
            Some(_) => 0,
            None => announced,
        }
    }

    /// ref(raw) in ns (Unix time, UTC: with the leap second once it is behind).
    pub(crate) fn at(&self, raw_ns: i64) -> i128 {
        let leap_ns = i128::from(self.leap_applied(raw_ns).unwrap_or(0)) * NS_PER_S;
        self.continuous_at(raw_ns) - leap_ns
    }

    pub(crate) fn now(&self) -> i128 {
        self.at(raw_ns())
    }

    /// CLOCK_REALTIME − ref, with REALTIME read between two RAW reads.
    pub(crate) fn sample_offset(&self) -> OffsetSample {
        let (real, raw) = realtime_and_raw();
        let reference = self.at(raw) as i64;
        OffsetSample {
            offset_ns: real - reference,
            realtime_ns: real,
            ref_ns: reference,
        }
    }

    pub(crate) fn to_json(&self, listen: &SocketAddr) -> Value {
        json!({
            "k_ns": self.k_ns,
            "raw0_ns": self.raw0_ns,
            "offset_ns": self.offset_ns,
            "freq_ppm": self.freq_ppm,
            "leap": self.leap.map(|(at_s, delta_s)| json!({"at_unix_s": at_s, "delta_s": delta_s})),
            "steps": steps_json(&self.steps),
            "listen": listen.to_string(),
        })
    }

    pub(crate) fn from_json(v: &Value) -> Result<RefClock, String> {
        let int = |name: &str| {
            v[name]
                .as_i64()
                .ok_or(format!("params: {name} missing or not an integer"))
        };
        Ok(RefClock {
            k_ns: int("k_ns")?,
            raw0_ns: int("raw0_ns")?,
            offset_ns: int("offset_ns")?,
            freq_ppm: v["freq_ppm"]
                .as_f64()
                .ok_or("params: freq_ppm missing or not a number")?,
            leap: match &v["leap"] {
                Value::Null => None,
                leap => Some((
                    leap["at_unix_s"]
                        .as_i64()
                        .ok_or("params: leap.at_unix_s missing or not an integer")?,
                    leap["delta_s"]
                        .as_i64()
                        .ok_or("params: leap.delta_s missing or not an integer")?,
                )),
            },
            steps: match &v["steps"] {
                Value::Null => Vec::new(),
                Value::Array(steps) => steps
                    .iter()
                    .map(|step| {
                        Ok((
                            step["at_raw_ns"]
                                .as_i64()
                                .ok_or("params: steps[].at_raw_ns missing or not an integer")?,
                            step["by_ns"]
                                .as_i64()
                                .ok_or("params: steps[].by_ns missing or not an integer")?,
                        ))
                    })
                    .collect::<Result<_, String>>()?,
                _ => return Err("params: steps is not an array".into()),
            },
        })
    }

    pub(crate) fn load(path: &Path) -> Result<RefClock, String> {
        parse_params(path, &read_params(path)?)
    }
}

fn read_params(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn parse_params(path: &Path, text: &str) -> Result<RefClock, String> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    RefClock::from_json(&v).map_err(|e| format!("{}: {e}", path.display()))
}

fn steps_json(steps: &[(i64, i64)]) -> Value {
    steps
        .iter()
        .map(|(at_raw_ns, by_ns)| json!({"at_raw_ns": at_raw_ns, "by_ns": by_ns}))
        .collect()
}

/// The reference clock of a params file, loaded again when the file's text changes
/// (`step` rewrites it; its text, not its mtime, which two quick writes can share): read
/// no more often than every `RELOAD_CHECK`.
pub(crate) struct Params {
    /// None: a clock given as it is, never reloaded (unit tests).
    path: Option<PathBuf>,
    clock: RefClock,
    text: String,
    checked: Instant,
}

/// How often `Params` looks for a new params file; `step` schedules its step further ahead
/// than this, so that every reader has it before it applies.
const RELOAD_CHECK: Duration = Duration::from_millis(100);

impl Params {
    pub(crate) fn load(path: &Path) -> Result<Params, String> {
        let text = read_params(path)?;
        Ok(Params {
            clock: parse_params(path, &text)?,
            path: Some(path.to_path_buf()),
            text,
            checked: Instant::now(),
        })
    }

    #[cfg(test)]
    pub(crate) fn fixed(clock: RefClock) -> Params {
        Params {
            path: None,
            clock,
            text: String::new(),
            checked: Instant::now(),
        }
    }

    /// Reads the params file again when `RELOAD_CHECK` has passed. A file that cannot be
    /// read or parsed in the middle of a run is an error: the reference's time would no
    /// longer be known.
    pub(crate) fn refresh(&mut self) -> Result<(), String> {
        let Some(path) = self
            .path
            .as_ref()
            .filter(|_| self.checked.elapsed() >= RELOAD_CHECK)
        else {
            return Ok(());
        };
        self.checked = Instant::now();
        let text = read_params(path)?;
        if text != self.text {
            self.clock = parse_params(path, &text)?;
            self.text = text;
        }
        Ok(())
    }

    /// The clock as the params file said when last read.
    pub(crate) fn current(&self) -> &RefClock {
        &self.clock
    }
}

/// `step --params FILE --by-ns N [--in-ms 1000]`: the reference's time steps by N ns, in
/// `--in-ms` ms (on CLOCK_MONOTONIC_RAW) so that `serve` and `bound` have read it before.
pub(crate) fn step_cmd(args: &[String]) -> Result<Value, String> {
    let opts = Opts::parse(args, &["--params", "--by-ns", "--in-ms"], 0)?;
    let path = Path::new(opts.required("--params")?);
    let by_ns: i64 = opts.parsed("--by-ns", 0)?;
    if by_ns == 0 {
        return Err("--by-ns: a step of 0 ns is no step".into());
    }
    let in_ms: u64 = opts.parsed("--in-ms", 1000)?;
    if u128::from(in_ms) <= RELOAD_CHECK.as_millis() * 2 {
        return Err(format!(
            "--in-ms {in_ms}: readers look at the params every {} ms; give them longer",
            RELOAD_CHECK.as_millis()
        ));
    }
    let text = read_params(path)?;
    let mut clock = parse_params(path, &text)?;
    // The file is rewritten whole, with what else it holds (the listen address).
    let mut v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let at_raw_ns = raw_ns().saturating_add((in_ms as i64).saturating_mul(1_000_000));
    clock.steps.push((at_raw_ns, by_ns));
    v["steps"] = steps_json(&clock.steps);
    write_atomically(path, &v)?;
    Ok(json!({"at_raw_ns": at_raw_ns, "by_ns": by_ns}))
}

/// Writes `value` to `path` atomically: a temporary file next to it, then a rename (which
/// replaces an existing file).
pub(crate) fn write_atomically(path: &Path, value: &Value) -> Result<(), String> {
    let mut name = path
        .file_name()
        .ok_or(format!("{}: not a file name", path.display()))?
        .to_os_string();
    name.push(format!(".tmp.{}", std::process::id()));
    let tmp = path.with_file_name(name);
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(format!("{value}\n").as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}
