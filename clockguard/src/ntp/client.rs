//! The NTP service's I/O shell: resolves the configured servers, polls them over UDP,
//! feeds the replies to the sans-IO [`Engine`], applies its estimate through the slew
//! engine (never a step), keeps the drift file, and answers NTP clients when `serve` is set.

use std::{
    net::SocketAddr,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use clockguard_core::status::{Convergence, ServerCounters, ServerStatus, SourcesAnswer, Tracking};
use tokio::{
    net::UdpSocket,
    sync::{mpsc, oneshot, watch},
    time::Instant,
};

use super::{
    engine::{Engine, SystemEstimate},
    packet::{Leap, NtpTimestamp},
    server::{self, DropReason, RateLimiter, Response, ServerClock},
    source::{leap_text, Rejected, SourceConfig},
};
use crate::{
    clock,
    config::NtpConfig,
    record,
    slew::{KernelClock, KernelRate, LinuxClock, Sample, SlewError, SlewHandle},
};

/// The fitted frequency is given to the kernel once its standard error is below this
/// (s/s); until then the clock keeps the drift file's (or the kernel's) frequency, because
/// a slope fitted over a few seconds of jittery samples is worse than none.
const FREQ_APPLY_MAX_SIGMA: f64 = 10e-6;
/// Corrections smaller than this are not worth a request to the slew engine, ns.
const MIN_CORRECTION_NS: i64 = 1_000;
/// Re-resolve a server's name after this many unanswered requests.
const RERESOLVE_AFTER: u64 = 8;
/// Retry names that did not resolve after this long.
const RESOLVE_RETRY: Duration = Duration::from_secs(64);
/// Offsets kept for the RMS offset.
const RMS_WINDOW: usize = 32;
/// The drift file is rewritten at most this often.
const DRIFT_WRITE_INTERVAL: Duration = Duration::from_secs(3600);
const DRIFT_FILE: &str = "ntp.drift";
/// Within this of NTP time (s), the clock has converged; checked every CONVERGENCE_CHECK.
const CONVERGED_S: f64 = 1e-3;
const CONVERGENCE_CHECK: Duration = Duration::from_secs(1);
/// Largest datagram read; anything longer is truncated and so fails to parse.
const MAX_DATAGRAM: usize = 1024;

/// Asks the kernel to stamp every datagram `socket` receives with CLOCK_REALTIME as it
/// arrives (SO_TIMESTAMPNS), so that receive times do not include the wake-up of the task
/// that reads it (under load, or in a slow VM, that is hundreds of µs, all on one leg).
/// The kernel switches timestamping on through deferred work when the first socket asks;
/// datagrams read before that carry the time of the read, as without the option.
fn enable_rx_timestamps(socket: &UdpSocket) {
    if let Err(err) = clockguard_sys::enable_rx_timestamps(socket) {
        tracing::debug!("NTP: SO_TIMESTAMPNS: {err}; receive times are taken in user space");
    }
}

/// One datagram: its length, its sender and the kernel's receive time (CLOCK_REALTIME ns;
/// None when the kernel gave none).
async fn recv_stamped(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr, Option<i64>)> {
    loop {
        socket.readable().await?;
        match socket.try_io(tokio::io::Interest::READABLE, || {
            clockguard_sys::recv_stamped(socket.as_raw_fd(), buf)
        }) {
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
            result => return result,
        }
    }
}

/// CLOCK_MONOTONIC_RAW (ns) at a kernel stamp (CLOCK_REALTIME, ns) of a datagram's arrival
/// or departure: now, less the time since (read on REALTIME: while slewing that is off by
/// the slew rate, at most 10 %, of it); now when there is no stamp.
fn raw_at_stamp(stamp: Option<i64>) -> i64 {
    let now = LinuxClock.sample();
    let waited = stamp.map_or(0, |s| (now.realtime_ns - s).clamp(0, 1_000_000_000));
    now.raw_ns - waited
}

enum NtpQuery {
    Tracking(oneshot::Sender<Tracking>),
    Sources(oneshot::Sender<SourcesAnswer>),
    Shutdown(oneshot::Sender<()>),
}

/// What the daemon keeps of the NTP service.
#[derive(Clone)]
pub struct NtpHandle {
    queries: mpsc::Sender<NtpQuery>,
}

/// The NTP service's task ended (its queries go unanswered).
#[derive(Debug)]
pub struct NtpStopped;

impl std::fmt::Display for NtpStopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the NTP service has stopped")
    }
}

impl NtpHandle {
    pub async fn tracking(&self) -> Result<Tracking, NtpStopped> {
        self.ask(NtpQuery::Tracking).await
    }

    pub async fn sources(&self) -> Result<SourcesAnswer, NtpStopped> {
        self.ask(NtpQuery::Sources).await
    }

    async fn ask<T>(&self, query: fn(oneshot::Sender<T>) -> NtpQuery) -> Result<T, NtpStopped> {
        let (tx, rx) = oneshot::channel();
        self.queries.send(query(tx)).await.map_err(|_| NtpStopped)?;
        rx.await.map_err(|_| NtpStopped)
    }

    /// Writes the drift file and stops.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.queries.send(NtpQuery::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Starts the NTP service when the configuration has servers or `serve`. `slew`: the
/// clock is disciplined only when given (guard mode in force); otherwise it is measured.
pub async fn spawn(
    config: &NtpConfig,
    slew: Option<SlewHandle>,
    state_dir: &Path,
) -> Result<Option<NtpHandle>> {
    if config.servers.is_empty() && config.pools.is_empty() && config.serve.is_none() {
        return Ok(None);
    }
    let drift_path = state_dir.join(DRIFT_FILE);
    let drift = read_drift(&drift_path);
    let prior_freq = drift.map_or(0.0, |(ppm, _)| ppm * 1e-6);
    if let (Some(slew), Some((ppm, _))) = (&slew, drift) {
        if let Err(err) = slew.set_base(KernelRate::from_ppm(ppm)) {
            tracing::warn!("NTP: cannot set the drift file's frequency: {err}");
        }
    }
    let (server_clock_tx, server_clock) =
        watch::channel(unsynchronised_clock(config.local_stratum));
    let server_counters = Arc::new(Mutex::new(ServerCounters::default()));
    let serving = match &config.serve {
        Some(addr) => {
            let socket = UdpSocket::bind(addr)
                .await
                .with_context(|| format!("ntp.serve: cannot bind {addr}"))?;
            let bound = socket.local_addr()?;
            tracing::info!("NTP: serving on {bound}");
            enable_rx_timestamps(&socket);
            let limiter =
                RateLimiter::new(config.rate_limit_interval, config.rate_limit_burst, 4096);
            tokio::spawn(serve(
                socket,
                server_clock.clone(),
                limiter,
                server_counters.clone(),
            ));
            Some(bound.to_string())
        }
        None => None,
    };
    let epoch_ns = clock::realtime_ns() - clock::read_ns(libc::CLOCK_MONOTONIC_RAW);
    let source_config = SourceConfig {
        minpoll: config.minpoll,
        maxpoll: config.maxpoll,
        iburst: config.iburst,
    };
    let (datagrams_tx, datagrams) = mpsc::channel(256);
    let (queries, query_rx) = mpsc::channel(16);
    let mut names: Vec<Name> = Vec::new();
    for server in &config.servers {
        names.push(Name::new(server, 1));
    }
    for pool in &config.pools {
        names.push(Name::new(pool, config.pool_size));
    }
    let client = Client {
        engine: Engine::new(epoch_ns, source_config, prior_freq),
        names,
        sockets: Vec::new(),
        next_poll: Vec::new(),
        last_poll: Vec::new(),
        datagrams_tx,
        slew,
        drift_path,
        last_drift_write: None,
        tracking: TrackingState::default(),
        server_clock: server_clock_tx,
        server_counters,
        serving,
        local_stratum: config.local_stratum,
        too_large_alerted: false,
    };
    tokio::spawn(client.run(datagrams, query_rx));
    Ok(Some(NtpHandle { queries }))
}

/// A configured server or pool name and the sources it gave.
struct Name {
    text: String,
    host: String,
    port: u16,
    wanted: usize,
    sources: Vec<usize>,
    next_resolve: Option<Instant>,
    /// When the name was last looked up.
    resolved_at: Option<Instant>,
}

impl Name {
    fn new(text: &str, wanted: usize) -> Name {
        let (host, port) = clockguard_core::config::split_host_port(text)
            .expect("validated with the configuration");
        Name {
            text: text.to_string(),
            host,
            port,
            wanted,
            sources: Vec::new(),
            next_resolve: Some(Instant::now()),
            resolved_at: None,
        }
    }
}

/// What `tracking` is made from.
#[derive(Default)]
struct TrackingState {
    /// Offsets (system clock − NTP time, s) measured at each clock update.
    offsets: std::collections::VecDeque<f64>,
    last_update: Option<(i64, i64)>,
    update_interval_s: Option<f64>,
    applied_freq: Option<f64>,
    corrections: u64,
    corrections_refused: u64,
    /// A correction of 1 ms or more in progress: (CLOCK_MONOTONIC_RAW when it started, ns;
    /// the offset then, s).
    converging: Option<(i64, f64)>,
    /// The latest convergences, oldest first (the last is `last_convergence`): a small
    /// excursion corrected after a large one does not hide how long the large one took.
    convergences: std::collections::VecDeque<Convergence>,
}

/// Convergences kept for `tracking`.
const CONVERGENCES_KEPT: usize = 8;

struct Client {
    engine: Engine,
    names: Vec<Name>,
    /// Per source id; None once the source is retired.
    sockets: Vec<Option<SourceIo>>,
    next_poll: Vec<Instant>,
    /// When each source's last request was sent.
    last_poll: Vec<Instant>,
    datagrams_tx: mpsc::Sender<(usize, Vec<u8>, i64)>,
    slew: Option<SlewHandle>,
    drift_path: PathBuf,
    last_drift_write: Option<Instant>,
    tracking: TrackingState,
    server_clock: watch::Sender<ServerClock>,
    server_counters: Arc<Mutex<ServerCounters>>,
    serving: Option<String>,
    local_stratum: Option<u8>,
    too_large_alerted: bool,
}

/// A source's socket and the task that reads it; dropping it (the source retired, or the
/// service stopped) stops the task.
struct SourceIo {
    socket: Arc<UdpSocket>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for SourceIo {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn raw_ns() -> i64 {
    clock::read_ns(libc::CLOCK_MONOTONIC_RAW)
}

/// 64 random bits from the kernel (getrandom(2)); the request cookie must be unguessable
/// so that an off-path attacker cannot forge a reply.
fn random_cookie() -> NtpTimestamp {
    NtpTimestamp(clockguard_sys::random_u64().unwrap_or_else(|| {
        // Never expected after boot; fall back to the clock's low bits mixed.
        let t = raw_ns() as u64;
        t ^ t.rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15
    }))
}

impl Client {
    async fn run(
        mut self,
        mut datagrams: mpsc::Receiver<(usize, Vec<u8>, i64)>,
        mut queries: mpsc::Receiver<NtpQuery>,
    ) {
        let mut convergence_check = tokio::time::interval(CONVERGENCE_CHECK);
        loop {
            self.resolve_due().await;
            let next = self
                .next_poll
                .iter()
                .copied()
                .chain(self.names.iter().filter_map(|n| n.next_resolve))
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            // The moment a leap second the sources announced comes (1 ms after it by the
            // estimate, so that the engine finds it passed).
            let leap_due = self.engine.pending_leap_raw_ns().map(|raw| {
                Instant::now() + Duration::from_nanos((raw - raw_ns()).max(0) as u64 + 1_000_000)
            });
            tokio::select! {
                _ = tokio::time::sleep_until(next) => self.poll_due(),
                _ = tokio::time::sleep_until(leap_due.unwrap_or(next)), if leap_due.is_some() => {
                    self.engine.update(raw_ns());
                    self.apply().await;
                }
                _ = convergence_check.tick(), if self.tracking.converging.is_some() => {
                    self.check_convergence()
                }
                Some((id, bytes, raw_rx)) = datagrams.recv() => self.on_datagram(id, &bytes, raw_rx).await,
                query = queries.recv() => match query {
                    Some(NtpQuery::Tracking(reply)) => { let _ = reply.send(self.tracking_report()); }
                    Some(NtpQuery::Sources(reply)) => { let _ = reply.send(self.sources_report()); }
                    Some(NtpQuery::Shutdown(reply)) => {
                        self.write_drift();
                        let _ = reply.send(());
                        return;
                    }
                    None => return,
                },
            }
        }
    }

    async fn resolve_due(&mut self) {
        let now = Instant::now();
        for index in 0..self.names.len() {
            // Unreachable sources of a name make it due again.
            let stale = self.names[index].sources.iter().any(|&id| {
                let s = &self.engine.sources()[id];
                s.reach() == 0 && s.counters.sent >= RERESOLVE_AFTER
            });
            let name = &mut self.names[index];
            // At most once per RESOLVE_RETRY for the same stale source: a literal address
            // or a name that keeps giving the same addresses must not spin the loop.
            let rested = name
                .resolved_at
                .is_none_or(|t| now.duration_since(t) >= RESOLVE_RETRY);
            if stale && rested && name.next_resolve.is_none() {
                name.next_resolve = Some(now);
            }
            if name.next_resolve.is_none_or(|t| t > now) {
                continue;
            }
            name.next_resolve = None;
            name.resolved_at = Some(now);
            let query = format!("{}:{}", name.host, name.port);
            let lookup = tokio::time::timeout(
                Duration::from_secs(5),
                tokio::net::lookup_host(query.clone()),
            )
            .await;
            let addrs: Vec<SocketAddr> = match lookup {
                Ok(Ok(addrs)) => addrs.collect(),
                Ok(Err(err)) => {
                    tracing::warn!("NTP: cannot resolve {}: {err}", name.text);
                    Vec::new()
                }
                Err(_) => {
                    tracing::warn!("NTP: resolving {} timed out", name.text);
                    Vec::new()
                }
            };
            if addrs.is_empty() {
                self.names[index].next_resolve = Some(now + RESOLVE_RETRY);
                continue;
            }
            self.adopt(index, addrs).await;
        }
    }

    /// Points the name's sources at `addrs`: unreachable ones move to a new address, new
    /// ones are added up to the name's count.
    async fn adopt(&mut self, index: usize, addrs: Vec<SocketAddr>) {
        let in_use: Vec<SocketAddr> = self.engine.sources().iter().map(|s| s.addr).collect();
        let mut fresh = addrs.into_iter().filter(|a| !in_use.contains(a));
        let name_text = self.names[index].text.clone();
        let existing = self.names[index].sources.clone();
        for id in existing {
            let source = &self.engine.sources()[id];
            if source.reach() != 0 || source.counters.sent < RERESOLVE_AFTER {
                continue;
            }
            if let Some(addr) = fresh.next() {
                tracing::info!(
                    "NTP: {name_text}: {} unreachable, trying {addr}",
                    source.addr
                );
                let new_id = self.add_source(&name_text, addr).await;
                // The old source stays listed (unreachable) but is no longer polled.
                self.sockets[id] = None;
                self.names[index].sources.retain(|&s| s != id);
                if let Some(new_id) = new_id {
                    self.names[index].sources.push(new_id);
                }
            }
        }
        while self.names[index].sources.len() < self.names[index].wanted {
            let Some(addr) = fresh.next() else { break };
            if let Some(id) = self.add_source(&name_text, addr).await {
                self.names[index].sources.push(id);
            }
        }
    }

    async fn add_source(&mut self, name: &str, addr: SocketAddr) -> Option<usize> {
        let bind: SocketAddr = if addr.is_ipv4() {
            "0.0.0.0:0".parse().expect("literal")
        } else {
            "[::]:0".parse().expect("literal")
        };
        let socket = match UdpSocket::bind(bind).await {
            Ok(s) => s,
            Err(err) => {
                tracing::error!("NTP: cannot open a socket for {addr}: {err}");
                return None;
            }
        };
        // Connected: the kernel drops datagrams from any other address.
        if let Err(err) = socket.connect(addr).await {
            tracing::warn!("NTP: cannot reach {name} at {addr}: {err}");
            return None;
        }
        enable_rx_timestamps(&socket);
        if let Err(err) = clockguard_sys::enable_tx_timestamps(&socket) {
            tracing::debug!("NTP: SO_TIMESTAMPING: {err}; send times are taken in user space");
        }
        let id = self.engine.add_source(name.to_string(), addr);
        let socket = Arc::new(socket);
        let tx = self.datagrams_tx.clone();
        let reader = socket.clone();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            loop {
                match recv_stamped(&reader, &mut buf).await {
                    Ok((n, _, stamp)) => {
                        let raw_rx = raw_at_stamp(stamp);
                        if tx.send((id, buf[..n].to_vec(), raw_rx)).await.is_err() {
                            return;
                        }
                    }
                    // ICMP port unreachable and the like: the reach register tells.
                    Err(err) => {
                        tracing::debug!("NTP: {addr}: {err}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        tracing::info!("NTP: source {name} at {addr}");
        self.sockets.push(Some(SourceIo { socket, reader }));
        // Sources start a little apart so that their bursts do not collide.
        self.next_poll
            .push(Instant::now() + Duration::from_millis(100 * id as u64 % 2000));
        self.last_poll.push(Instant::now());
        Some(id)
    }

    fn poll_due(&mut self) {
        let now = Instant::now();
        for id in 0..self.next_poll.len() {
            if self.next_poll[id] > now {
                continue;
            }
            let interval = self.engine.sources()[id].interval_s();
            self.next_poll[id] = now + Duration::from_secs_f64(interval);
            self.last_poll[id] = now;
            let Some(socket) = self.sockets[id].as_ref().map(|io| io.socket.clone()) else {
                self.next_poll[id] = now + Duration::from_secs(86_400 * 365);
                continue;
            };
            let cookie = random_cookie();
            let Some(request) = self.engine.request(id, cookie, raw_ns()) else {
                continue; // denied by KoD
            };
            match socket.try_send(&request) {
                Ok(_) => {
                    if let Some(stamp) = clockguard_sys::take_tx_timestamp(socket.as_raw_fd()) {
                        self.engine.sent_at(id, cookie, raw_at_stamp(Some(stamp)));
                    }
                }
                Err(err) => {
                    tracing::debug!("NTP: sending to {}: {err}", self.engine.sources()[id].addr)
                }
            }
        }
        // A source that stopped answering leaves the selection without a reply to say so.
        let was_synchronised = self.engine.unsynchronised_why().is_none();
        self.engine.update(raw_ns());
        if was_synchronised && self.engine.unsynchronised_why().is_some() {
            self.server_clock
                .send_replace(unsynchronised_clock(self.local_stratum));
        }
    }

    async fn on_datagram(&mut self, id: usize, bytes: &[u8], raw_rx: i64) {
        match self.engine.receive(id, bytes, raw_rx) {
            Ok(sample) => {
                tracing::debug!(
                    "NTP: {}: offset {:+.9} s (against the raw timescale), delay {:.6} s",
                    self.engine.sources()[id].addr,
                    sample.offset_s,
                    sample.delay_s
                );
                // The poll interval may have changed with the sample: the next request is
                // one new interval after the last one (not before now).
                let interval = Duration::from_secs_f64(self.engine.sources()[id].interval_s());
                self.next_poll[id] = (self.last_poll[id] + interval).max(Instant::now());
                self.apply().await;
            }
            // Counted per source (`clockguard sources`); at debug level only, so that a
            // flood of forged datagrams cannot flood the log.
            Err(why) => tracing::debug!(
                "NTP: dropped a {} datagram from {} ({} bytes)",
                rejected_text(why),
                self.engine.sources()[id].addr,
                bytes.len()
            ),
        }
    }

    /// Brings the clock to the estimate: the base rate to the fitted frequency (once it is
    /// known well enough), and the remaining difference to the slew engine, which replaces
    /// whatever correction it still had pending.
    async fn apply(&mut self) {
        let system = match self.engine.system() {
            Some(system) if self.engine.unsynchronised_why().is_none() => system.clone(),
            _ => {
                self.server_clock
                    .send_replace(unsynchronised_clock(self.local_stratum));
                return;
            }
        };
        let now = LinuxClock.sample();
        let Adjustment { error_ns, new_freq } = adjustment(
            &system,
            self.engine.epoch_ns(),
            now,
            self.tracking.applied_freq,
        );
        let offset_s = -(error_ns as f64) / 1e9;
        tracing::debug!(
            "NTP: estimate {:+.9} s ± {:.6} s at {:+.3} ± {:.3} ppm; the clock is {offset_s:+.9} s off",
            system.offset_at(now.raw_ns),
            system.freq_sigma,
            system.freq * 1e6,
            system.freq_sigma * 1e6
        );
        self.record_update(offset_s, now.raw_ns);
        self.publish_server_clock(&system, now.realtime_ns);
        let Some(slew) = self.slew.clone() else {
            return;
        };
        if let Some(freq) = new_freq {
            match slew.set_base(KernelRate::from_ppm(freq * 1e6)) {
                Ok(()) => self.tracking.applied_freq = Some(freq),
                Err(err) => tracing::error!("NTP: cannot set the frequency: {err}"),
            }
            self.write_drift_if_due();
        }
        if !correction_wanted(error_ns, slew.status().remaining_ns) {
            return;
        }
        match slew.replace(error_ns).await {
            Ok(status) => {
                self.tracking.corrections += 1;
                self.too_large_alerted = false;
                if error_ns.abs() >= 1_000_000 {
                    tracing::info!(
                        "NTP: the clock is {offset_s:+.6} s off: slewing at {:+.0} ppm (about {:.0} s)",
                        status.rate_ppm,
                        status.eta_s.unwrap_or(0.0)
                    );
                }
            }
            Err(err @ SlewError::TooLarge { .. }) => {
                self.tracking.corrections_refused += 1;
                if !std::mem::replace(&mut self.too_large_alerted, true) {
                    tracing::error!("ALERT: NTP: the clock is {offset_s:+.3} s off: {err}");
                }
            }
            Err(err) => tracing::error!("NTP: {err}"),
        }
    }

    /// While a correction of 1 ms or more runs: has the clock come within 1 ms of the
    /// estimate? Then say how long it took (the "reports the convergence time").
    fn check_convergence(&mut self) {
        let Some((started_raw, from_offset_s)) = self.tracking.converging else {
            return;
        };
        let Some(system) = self.engine.system() else {
            return;
        };
        let now = LinuxClock.sample();
        let error_ns = adjustment(system, self.engine.epoch_ns(), now, None).error_ns;
        if (error_ns as f64 / 1e9).abs() >= CONVERGED_S {
            return;
        }
        let took_s = (now.raw_ns - started_raw) as f64 / 1e9;
        tracing::info!(
            "NTP: the clock is within {} ms of NTP time, {took_s:.1} s after it was \
             {from_offset_s:+.6} s off (slewed, never stepped)",
            CONVERGED_S * 1e3
        );
        self.tracking.converging = None;
        let kept = &mut self.tracking.convergences;
        if kept.len() == CONVERGENCES_KEPT {
            kept.pop_front();
        }
        kept.push_back(Convergence {
            from_offset_s,
            took_s,
            ended: record::rfc3339_ns(now.realtime_ns),
        });
    }

    fn record_update(&mut self, offset_s: f64, raw: i64) {
        let t = &mut self.tracking;
        if offset_s.abs() >= CONVERGED_S && t.converging.is_none() && self.slew.is_some() {
            t.converging = Some((raw, offset_s));
        }
        if t.offsets.len() == RMS_WINDOW {
            t.offsets.pop_front();
        }
        t.offsets.push_back(offset_s);
        if let Some((last_raw, _)) = t.last_update {
            t.update_interval_s = Some((raw - last_raw) as f64 / 1e9);
        }
        t.last_update = Some((raw, clock::realtime_ns()));
    }

    fn publish_server_clock(&self, system: &SystemEstimate, realtime_ns: i64) {
        // What is still to slew is error the clients should know about.
        let pending_s = self
            .slew
            .as_ref()
            .map_or(0.0, |s| s.status().remaining_ns.abs() as f64 / 1e9);
        let unslewed_s = if self.slew.is_none() {
            self.tracking.offsets.back().map_or(0.0, |o| o.abs())
        } else {
            pending_s
        };
        self.server_clock.send_replace(ServerClock {
            leap: system.leap,
            stratum: system.stratum,
            precision: -20,
            reference_id: system.reference_id,
            reference_ts: NtpTimestamp::from_unix_ns(realtime_ns),
            root_delay_s: system.root_delay_s,
            root_dispersion_s: system.root_dispersion_s + unslewed_s,
        });
    }

    fn write_drift_if_due(&mut self) {
        if self
            .last_drift_write
            .is_none_or(|t| t.elapsed() >= DRIFT_WRITE_INTERVAL)
        {
            self.write_drift();
        }
    }

    /// `freq_ppm skew_ppm`, as chrony's driftfile.
    fn write_drift(&mut self) {
        let Some(system) = self.engine.system() else {
            return;
        };
        if system.freq_sigma > FREQ_APPLY_MAX_SIGMA {
            return;
        }
        let text = format!("{:.6} {:.6}\n", system.freq * 1e6, system.freq_sigma * 1e6);
        let tmp = self.drift_path.with_extension("drift.tmp");
        match std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &self.drift_path)) {
            Ok(()) => self.last_drift_write = Some(Instant::now()),
            Err(err) => tracing::warn!("NTP: writing {}: {err}", self.drift_path.display()),
        }
    }

    fn tracking_report(&self) -> Tracking {
        let now = LinuxClock.sample();
        let system = self.engine.system();
        let synchronized = system.is_some() && self.engine.unsynchronised_why().is_none();
        // System clock − NTP time: the opposite of the correction still to make.
        let offset_s = system
            .map(|s| -(adjustment(s, self.engine.epoch_ns(), now, None).error_ns as f64) / 1e9);
        let offsets = &self.tracking.offsets;
        let rms = (!offsets.is_empty())
            .then(|| (offsets.iter().map(|o| o * o).sum::<f64>() / offsets.len() as f64).sqrt());
        let peer = system.map(|s| &self.engine.sources()[s.peer]);
        let applied = self.tracking.applied_freq;
        Tracking {
            synchronized,
            unsynchronized_reason: self.engine.unsynchronised_why().map(String::from),
            disciplining: self.slew.is_some(),
            reference: peer.map(|p| p.name.clone()),
            reference_address: peer.map(|p| p.addr.to_string()),
            reference_id: system
                .map(|s| s.reference_id.iter().map(|b| format!("{b:02X}")).collect()),
            stratum: system.map(|s| s.stratum),
            ref_time: self
                .tracking
                .last_update
                .map(|(_, wall)| record::rfc3339_ns(wall)),
            offset_s,
            last_offset_s: offsets.back().copied(),
            rms_offset_s: rms,
            frequency_ppm: applied.map(|f| f * 1e6),
            estimated_frequency_ppm: system.map(|s| s.freq * 1e6),
            residual_freq_ppm: system.zip(applied).map(|(s, a)| (s.freq - a) * 1e6),
            skew_ppm: system.map(|s| s.freq_sigma * 1e6),
            root_delay_s: system.map(|s| s.root_delay_s),
            root_dispersion_s: system.map(|s| s.root_dispersion_s),
            update_interval_s: self.tracking.update_interval_s,
            leap_status: system
                .map_or("not synchronised", |s| leap_text(s.leap))
                .into(),
            leap_seconds: self
                .engine
                .leap_seconds()
                .iter()
                .map(|l| l.report())
                .collect(),
            corrections: self.tracking.corrections,
            corrections_refused: self.tracking.corrections_refused,
            last_convergence: self.tracking.convergences.back().cloned(),
            convergences: self.tracking.convergences.iter().cloned().collect(),
            converging_from_offset_s: self.tracking.converging.map(|(_, from)| from),
            slew: self.slew.as_ref().map(|s| s.status()),
            server: self.serving.as_ref().map(|addr| ServerStatus {
                listen: addr.clone(),
                counters: *self.server_counters.lock().expect("not poisoned"),
            }),
        }
    }

    fn sources_report(&self) -> SourcesAnswer {
        let now = LinuxClock.sample();
        let clock_s = (now.realtime_ns - now.raw_ns - self.engine.epoch_ns()) as f64 / 1e9;
        let sources = (0..self.engine.sources().len())
            .map(|id| {
                let state = self.engine.source_state(id);
                self.engine.sources()[id].report(now.raw_ns, clock_s, state)
            })
            .collect();
        let unresolved = self
            .names
            .iter()
            .filter(|n| n.sources.is_empty())
            .map(|n| n.text.clone())
            .collect();
        SourcesAnswer {
            sources,
            unresolved,
        }
    }
}

/// What bringing the clock to the estimate takes (the decision of `Client::apply`, pure so
/// that the simulation tests drive the clock through the same code).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Adjustment {
    /// Reference time − CLOCK_REALTIME now, ns: the whole correction still to slew.
    pub error_ns: i64,
    /// The base frequency (s/s) to give the kernel: the fitted one once its standard error
    /// is within `FREQ_APPLY_MAX_SIGMA` and it differs from the one applied.
    pub new_freq: Option<f64>,
}

/// The adjustment for `system` when the clocks read `now`; `epoch_ns` is the engine's
/// (local timescale = raw + epoch), `applied_freq` the base frequency given so far.
pub(crate) fn adjustment(
    system: &SystemEstimate,
    epoch_ns: i64,
    now: Sample,
    applied_freq: Option<f64>,
) -> Adjustment {
    let target_ns = now.raw_ns as i128
        + epoch_ns as i128
        + (system.offset_at(now.raw_ns) * 1e9).round() as i128;
    let error_ns =
        (target_ns - now.realtime_ns as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64;
    let new_freq = (system.freq_sigma <= FREQ_APPLY_MAX_SIGMA
        && applied_freq.is_none_or(|f| (f - system.freq).abs() > 1e-9))
    .then_some(system.freq);
    Adjustment { error_ns, new_freq }
}

/// Whether `error_ns` is worth a request to the slew engine, which has `remaining_ns`
/// still to apply.
pub(crate) fn correction_wanted(error_ns: i64, remaining_ns: i64) -> bool {
    (error_ns - remaining_ns).abs() >= MIN_CORRECTION_NS
}

fn rejected_text(why: Rejected) -> &'static str {
    match why {
        Rejected::Malformed => "malformed",
        Rejected::NotAReply => "non-reply",
        Rejected::BadOrigin => "spoofed (bad origin timestamp)",
        Rejected::Duplicate => "duplicate",
        Rejected::Kiss => "kiss-o'-death",
        Rejected::Unsynchronised => "unsynchronised",
        Rejected::Bogus => "bogus-timestamp",
    }
}

/// What we serve while no source is selected.
fn unsynchronised_clock(local_stratum: Option<u8>) -> ServerClock {
    match local_stratum {
        Some(stratum) => ServerClock {
            leap: Leap::None,
            stratum,
            precision: -20,
            reference_id: *b"LOCL",
            reference_ts: NtpTimestamp::from_unix_ns(clock::realtime_ns()),
            root_delay_s: 0.0,
            root_dispersion_s: 0.0,
        },
        None => ServerClock {
            leap: Leap::Unsynchronized,
            stratum: 16,
            precision: -20,
            reference_id: *b"INIT",
            reference_ts: NtpTimestamp::ZERO,
            root_delay_s: 0.0,
            root_dispersion_s: 0.0,
        },
    }
}

async fn serve(
    socket: UdpSocket,
    clock_rx: watch::Receiver<ServerClock>,
    mut limiter: RateLimiter,
    counters: Arc<Mutex<ServerCounters>>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, from, stamp) = match recv_stamped(&socket, &mut buf).await {
            Ok(x) => x,
            Err(err) => {
                tracing::warn!("NTP server: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let rx = NtpTimestamp::from_unix_ns(stamp.unwrap_or_else(clock::realtime_ns));
        let mono = clock::read_ns(libc::CLOCK_MONOTONIC);
        let clock = clock_rx.borrow().clone();
        let response = server::respond(&buf[..n], from.ip(), rx, mono, &clock, &mut limiter);
        let reply = {
            let mut c = counters.lock().expect("not poisoned");
            match response {
                Response::Reply(packet) => {
                    if packet.stratum == 0 {
                        c.kiss_rate += 1;
                    } else {
                        c.answered += 1;
                    }
                    Some(packet)
                }
                Response::Drop(DropReason::Malformed) => {
                    c.malformed += 1;
                    None
                }
                Response::Drop(DropReason::NotARequest) => {
                    c.not_a_request += 1;
                    None
                }
                Response::Drop(DropReason::RateLimited) => {
                    c.rate_limited += 1;
                    None
                }
            }
        };
        if let Some(mut packet) = reply {
            packet.transmit_ts = NtpTimestamp::from_unix_ns(clock::realtime_ns());
            if socket.send_to(&packet.to_bytes(), from).await.is_err() {
                counters.lock().expect("not poisoned").send_errors += 1;
            }
        }
    }
}

/// The drift file's frequency and skew (ppm); a missing or bad file is None (and said).
fn read_drift(path: &Path) -> Option<(f64, f64)> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
        Err(err) => {
            tracing::warn!("NTP: reading {}: {err}", path.display());
            return None;
        }
    };
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    match (fields.next(), fields.next()) {
        (Some(Ok(freq)), Some(Ok(skew)))
            if freq.abs() <= 500.0 && (0.0..=500.0).contains(&skew) =>
        {
            tracing::info!("NTP: drift file {}: {freq:+.3} ppm", path.display());
            Some((freq, skew))
        }
        _ => {
            tracing::warn!(
                "NTP: {}: not a drift file (expected \"FREQ_PPM SKEW_PPM\", |freq| <= 500): ignored",
                path.display()
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn datagrams_carry_the_kernel_receive_time() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        enable_rx_timestamps(&server);
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut buf = [0u8; 64];
        // The kernel turns receive timestamping on through deferred work the first time a
        // socket asks; until then recvmsg stamps with the time of the read. Warm up first.
        let to = server.local_addr().unwrap();
        client.send_to(b"warm-up", to).await.unwrap();
        recv_stamped(&server, &mut buf).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = clock::realtime_ns();
        client
            .send_to(b"0123456789", server.local_addr().unwrap())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (n, from, stamp) = recv_stamped(&server, &mut buf).await.unwrap();
        let after = clock::realtime_ns();
        assert_eq!((n, &buf[..n]), (10, &b"0123456789"[..]));
        assert_eq!(from, client.local_addr().unwrap());
        let stamp = stamp.expect("SO_TIMESTAMPNS gives a stamp on loopback");
        // Stamped on arrival, not when read 20 ms later.
        assert!(
            before <= stamp && stamp <= after,
            "{before} {stamp} {after}"
        );
        assert!(
            after - stamp >= 15_000_000,
            "read {} ns after arrival",
            after - stamp
        );
        // The raw time of arrival lies as far back.
        let raw = raw_at_stamp(Some(stamp));
        assert!(raw_ns() - raw >= 15_000_000);
    }

    #[test]
    fn drift_file_is_read_and_bad_ones_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ntp.drift");
        assert_eq!(read_drift(&path), None);
        std::fs::write(&path, "-12.5 0.25\n").unwrap();
        assert_eq!(read_drift(&path), Some((-12.5, 0.25)));
        std::fs::write(&path, "garbage\n").unwrap();
        assert_eq!(read_drift(&path), None);
        std::fs::write(&path, "900 1\n").unwrap();
        assert_eq!(read_drift(&path), None);
    }
}
