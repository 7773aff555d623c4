//! The NTP service's I/O shell: resolves the configured servers, polls them over UDP,
//! feeds the replies to the sans-IO [`Engine`], applies its estimate through the slew
//! engine (never a step), keeps the drift file, and answers NTP clients when `serve` is set.

use std::{
    net::SocketAddr,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Result;
use clockguard_core::{
    bound::{self, Measured},
    ntp::{
        client::{Action, ClientCore},
        nts::{self, ClientSession, ReplyOutcome},
        packet::HEADER_LEN,
    },
    status::{NtsReport, SourcesAnswer, Tracking},
    time::Raw,
};
use tokio::{
    net::UdpSocket,
    sync::{mpsc, oneshot, watch},
    time::Instant,
};

use super::nts_ke::{self, KeyExchange};
use super::random_array;
use super::serving::{self, Serving};
use super::{
    packet::NtpTimestamp,
    server::ServerClock,
    source::{Rejected, SourceConfig},
};
use crate::{
    clock,
    config::NtpConfig,
    slew::{KernelRate, SlewError, SlewHandle},
};

/// Retry names that did not resolve after this long.
const RESOLVE_RETRY: Duration = Duration::from_secs(64);
const DRIFT_FILE: &str = "ntp.drift";
/// Largest datagram read; anything longer is truncated and so fails to parse. An NTS
/// reply with 8 cookies of the longest taken (256 bytes) is about 2.2 KiB.
pub(super) const MAX_DATAGRAM: usize = 4096;

/// Asks the kernel to stamp every datagram `socket` receives with CLOCK_REALTIME as it
/// arrives (SO_TIMESTAMPNS), so that receive times do not include the wake-up of the task
/// that reads it (under load, or in a slow VM, that is hundreds of µs, all on one leg).
/// The kernel switches timestamping on through deferred work when the first socket asks;
/// datagrams read before that carry the time of the read, as without the option.
pub(super) fn enable_rx_timestamps(socket: &UdpSocket) {
    if let Err(err) = clockguard_sys::enable_rx_timestamps(socket) {
        tracing::debug!("NTP: SO_TIMESTAMPNS: {err}; receive times are taken in user space");
    }
}

/// One datagram: its length, its sender and the kernel's receive time (CLOCK_REALTIME ns;
/// None when the kernel gave none).
pub(super) async fn recv_stamped(
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

/// CLOCK_MONOTONIC_RAW at a kernel stamp (CLOCK_REALTIME, ns) of a datagram's arrival or
/// departure: now, less the time since (read on REALTIME: while slewing that is off by the
/// slew rate, at most 10 %, of it); now when there is no stamp.
fn raw_at_stamp(stamp: Option<i64>) -> Raw {
    let now = clock::reading();
    let waited = stamp.map_or(0, |s| (now.realtime.ns() - s).clamp(0, 1_000_000_000));
    now.raw.plus_ns(-waited)
}

enum NtpQuery {
    Tracking(oneshot::Sender<Tracking>),
    Sources(oneshot::Sender<SourcesAnswer>),
    /// The clock was disrupted: measure it again soon (forced: even right after another
    /// burst).
    Burst {
        forced: bool,
    },
    Shutdown(oneshot::Sender<()>),
}

/// Where the NTP service tells the error bound what it measured: the latest news only
/// (each is the whole state), read by the daemon's loop.
pub type BoundUpdates = watch::Sender<Option<bound::Update>>;

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

    /// The clock was disrupted: every source is polled now, in a burst (at most once a
    /// minute). Never waits: with the queue full, a burst is on its way anyway.
    pub fn burst(&self) {
        let _ = self.queries.try_send(NtpQuery::Burst { forced: false });
    }

    /// A burst even right after another: the hypervisor says the clock's calibration is
    /// void (a migration), and nothing else measures it again before the next poll.
    pub fn burst_forced(&self) {
        let _ = self.queries.try_send(NtpQuery::Burst { forced: true });
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
/// `bound`: where each measurement is told, for the error bound.
pub async fn spawn(
    config: &NtpConfig,
    slew: Option<SlewHandle>,
    state_dir: &Path,
    bound: Option<BoundUpdates>,
) -> Result<Option<NtpHandle>> {
    if !config.has_sources() && config.serve.is_none() {
        return Ok(None);
    }
    // Before anything starts: an unreadable CA file stops the daemon with its name.
    let tls = if config.nts_servers.is_empty() {
        None
    } else {
        Some(nts_ke::tls_config(config.nts_ca.as_deref())?)
    };
    let drift_path = state_dir.join(DRIFT_FILE);
    let drift = read_drift(&drift_path);
    let prior_freq = drift.map_or(0.0, |(ppm, _)| ppm * 1e-6);
    if let (Some(slew), Some((ppm, _))) = (&slew, drift) {
        if let Err(err) = slew.set_base(KernelRate::from_ppm(ppm)) {
            tracing::warn!("NTP: cannot set the drift file's frequency: {err}");
        }
    }
    // The engine's local timescale: CLOCK_MONOTONIC_RAW + (REALTIME − RAW now).
    let start = clock::reading();
    let source_config = SourceConfig {
        minpoll: config.minpoll,
        maxpoll: config.maxpoll,
        iburst: config.iburst,
    };
    let core = ClientCore::new(
        start.realtime_minus_raw_ns(),
        source_config,
        prior_freq,
        slew.is_some(),
        config.local_stratum,
    );
    let (server_clock_tx, server_clock) = watch::channel(core.unsynchronised_clock(start));
    let serving = serving::start(config, server_clock.clone(), state_dir).await?;
    let (datagrams_tx, datagrams) = mpsc::channel(256);
    let (queries, query_rx) = mpsc::channel(16);
    let mut names: Vec<Name> = Vec::new();
    for server in &config.servers {
        names.push(Name::new(server, 1));
    }
    for pool in &config.pools {
        names.push(Name::new(pool, config.pool_size));
    }
    let nts_names = config.nts_servers.iter().map(|s| NtsName::new(s)).collect();
    let (exchanges_tx, exchanges) = mpsc::channel(16);
    let client = Client {
        core,
        names,
        nts: nts_names,
        tls,
        exchanges_tx,
        sockets: Vec::new(),
        datagrams_tx,
        slew,
        drift_path,
        server_clock: server_clock_tx,
        serving,
        bound,
    };
    tokio::spawn(client.run(datagrams, query_rx, exchanges));
    Ok(Some(NtpHandle { queries }))
}

/// A key exchange's result, by NTS name index: the exchange and the NTP server's address
/// it named, or why not (text).
type ExchangeResult = Result<(KeyExchange, SocketAddr), String>;

/// The address of the NTP server a key exchange named (its first, 5 s at most).
async fn resolve_ntp_server(exchange: &KeyExchange) -> Result<SocketAddr, String> {
    let target = (exchange.ntp_host.clone(), exchange.ntp_port);
    let named = || format!("{}:{}", exchange.ntp_host, exchange.ntp_port);
    match tokio::time::timeout(Duration::from_secs(5), tokio::net::lookup_host(target)).await {
        Ok(Ok(mut addrs)) => addrs
            .next()
            .ok_or_else(|| format!("the NTP server it named, {}, has no address", named())),
        Ok(Err(err)) => Err(format!(
            "cannot resolve the NTP server it named, {}: {err}",
            named()
        )),
        Err(_) => Err(format!(
            "resolving the NTP server it named, {}, timed out",
            named()
        )),
    }
}

/// A configured NTS server: its key exchanges, the session they gave and its source.
struct NtsName {
    text: String,
    host: String,
    port: u16,
    /// The source polled with the session (the NTP address the last exchange named).
    source: Option<usize>,
    session: Option<ClientSession>,
    /// When the next key exchange starts; None while one runs or none is needed.
    next_exchange: Option<Instant>,
    exchanging: bool,
    /// When the last exchange started, and how many failed in a row since one worked.
    last_exchange: Option<Instant>,
    failures: u32,
    /// Exchanges started because the source went silent, since its last authentic reply.
    silent_exchanges: u32,
    report: NtsReport,
}

impl NtsName {
    fn new(text: &str) -> NtsName {
        let (host, port) = clockguard_core::config::split_host_port_or(text, nts::KE_PORT)
            .expect("validated with the configuration");
        NtsName {
            text: text.to_string(),
            report: NtsReport {
                name: if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                },
                ..NtsReport::default()
            },
            host,
            port,
            source: None,
            session: None,
            next_exchange: Some(Instant::now()),
            exchanging: false,
            last_exchange: None,
            failures: 0,
            silent_exchanges: 0,
        }
    }

    /// A key exchange (or what had to follow it) failed: said, counted, and the next one
    /// backed off.
    fn exchange_failed(&mut self, why: String) {
        self.failures += 1;
        self.report.key_exchange_errors += 1;
        let wait_s = nts::key_exchange_backoff_s(self.failures);
        tracing::warn!(
            "NTS: {}: {why}; next key exchange in {wait_s} s",
            self.report.name
        );
        self.report.last_error = Some(why);
        self.next_exchange = Some(Instant::now() + Duration::from_secs(wait_s));
    }

    /// Asks for a key exchange now, unless one runs or a failed one's back-off holds.
    fn exchange_soon(&mut self) {
        if !self.exchanging && self.next_exchange.is_none() {
            self.next_exchange = Some(Instant::now());
        }
    }
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

struct Client {
    core: ClientCore,
    names: Vec<Name>,
    nts: Vec<NtsName>,
    /// The NTS-KE TLS configuration, when there are NTS servers.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Key exchanges' results, by NTS name index (the error as text).
    exchanges_tx: mpsc::Sender<(usize, ExchangeResult)>,
    /// Per source id; None once the source is retired.
    sockets: Vec<Option<SourceIo>>,
    datagrams_tx: mpsc::Sender<(usize, Vec<u8>, Raw)>,
    slew: Option<SlewHandle>,
    drift_path: PathBuf,
    server_clock: watch::Sender<ServerClock>,
    serving: Option<Serving>,
    bound: Option<BoundUpdates>,
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

/// The request cookie (the origin timestamp a reply must echo): 64 random bits.
fn random_cookie() -> NtpTimestamp {
    NtpTimestamp(u64::from_be_bytes(random_array()))
}

/// The tokio instant at which CLOCK_MONOTONIC_RAW reaches `due` (now when it has).
fn tokio_instant_at(due: Raw) -> Instant {
    let wait_ns = due.ns_since(clock::reading().raw).max(0);
    Instant::now() + Duration::from_nanos(wait_ns as u64)
}

impl Client {
    async fn run(
        mut self,
        mut datagrams: mpsc::Receiver<(usize, Vec<u8>, Raw)>,
        mut queries: mpsc::Receiver<NtpQuery>,
        mut exchanges: mpsc::Receiver<(usize, ExchangeResult)>,
    ) {
        loop {
            self.resolve_due().await;
            self.exchange_due();
            let core_due = self.core.next_wakeup().map(tokio_instant_at);
            let next = core_due
                .into_iter()
                .chain(self.names.iter().filter_map(|n| n.next_resolve))
                .chain(self.nts.iter().filter_map(|n| n.next_exchange))
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {
                    if core_due.is_some_and(|due| due <= Instant::now()) {
                        let actions =
                            self.core.on_timer(clock::reading(), self.slew_remaining_ns(), random_cookie);
                        self.execute(actions).await;
                    }
                }
                Some((id, bytes, arrived)) = datagrams.recv() => self.on_datagram(id, &bytes, arrived).await,
                Some((index, result)) = exchanges.recv() => self.on_exchange(index, result).await,
                query = queries.recv() => match query {
                    Some(NtpQuery::Tracking(reply)) => { let _ = reply.send(self.tracking_report()); }
                    Some(NtpQuery::Sources(reply)) => { let _ = reply.send(self.sources_report()); }
                    Some(NtpQuery::Burst { forced }) => {
                        if self.core.burst(clock::reading().raw, forced) {
                            tracing::info!("NTP: the clock was disrupted: polling every source now");
                        }
                    }
                    Some(NtpQuery::Shutdown(reply)) => {
                        if let Some(text) = self.core.drift_text() {
                            self.write_drift(&text);
                        }
                        let _ = reply.send(());
                        return;
                    }
                    None => return,
                },
            }
        }
    }

    fn slew_remaining_ns(&self) -> Option<i64> {
        self.slew.as_ref().map(|s| s.status().remaining_ns)
    }

    async fn resolve_due(&mut self) {
        let now = Instant::now();
        for index in 0..self.names.len() {
            // Unreachable sources of a name make it due again.
            let stale = self.names[index]
                .sources
                .iter()
                .any(|&id| self.core.unreachable(id));
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

    /// Starts the NTS key exchanges that are due: at start, when a session has no cookie
    /// left (or an NTS NAK went unanswered), when its source stopped answering, and after
    /// a failed one's back-off. Each runs in its own task, which also resolves the NTP
    /// server the exchange named; `on_exchange` takes the result.
    fn exchange_due(&mut self) {
        let Some(tls) = &self.tls else { return };
        let now = Instant::now();
        for (index, name) in self.nts.iter_mut().enumerate() {
            // A source silent since the last exchange: exchange again, backing off (from
            // RESOLVE_RETRY) while the new keys do not help.
            let rest = RESOLVE_RETRY.max(Duration::from_secs(nts::key_exchange_backoff_s(
                name.silent_exchanges,
            )));
            let unanswered = name.source.is_some_and(|id| self.core.unreachable(id))
                && name
                    .last_exchange
                    .is_none_or(|t| now.duration_since(t) >= rest);
            if unanswered && !name.exchanging && name.next_exchange.is_none() {
                name.silent_exchanges += 1;
                name.exchange_soon();
            }
            if name.exchanging || name.next_exchange.is_none_or(|t| t > now) {
                continue;
            }
            name.next_exchange = None;
            name.exchanging = true;
            name.last_exchange = Some(now);
            let (tls, host, port) = (tls.clone(), name.host.clone(), name.port);
            let results = self.exchanges_tx.clone();
            tokio::spawn(async move {
                let result = match nts_ke::key_exchange(tls, &host, port).await {
                    Ok(exchange) => resolve_ntp_server(&exchange)
                        .await
                        .map(|addr| (exchange, addr)),
                    Err(err) => Err(format!("key exchange failed: {err:#}")),
                };
                let _ = results.send((index, result)).await;
            });
        }
    }

    /// A key exchange ended: a new session, polled at the NTP address it named (a new
    /// source when that changed), or the error kept and the next attempt backed off.
    async fn on_exchange(&mut self, index: usize, result: ExchangeResult) {
        let name = &mut self.nts[index];
        name.exchanging = false;
        let (exchange, addr) = match result {
            Ok(done) => done,
            Err(why) => return name.exchange_failed(why),
        };
        name.report.key_exchanges += 1;
        tracing::info!(
            "NTS: key exchange with {}: {} cookies, NTP at {addr}",
            name.report.name,
            exchange.cookies.len()
        );
        name.session = Some(ClientSession::new(
            exchange.c2s,
            exchange.s2c,
            exchange.cookies,
        ));
        let previous = name.source;
        if previous.is_none_or(|id| self.core.engine().sources()[id].addr != addr) {
            let text = name.text.clone();
            let new_id = self.add_source(&text, addr).await;
            if let Some(id) = previous {
                self.core.retire(id);
                self.sockets[id] = None;
            }
            self.nts[index].source = new_id;
        }
        let name = &mut self.nts[index];
        if name.source.is_none() {
            // Nothing would poll the session: from the key exchange again, later.
            name.session = None;
            name.report.address = None;
            return name.exchange_failed(format!(
                "cannot open a socket to the NTP server it named, {addr}"
            ));
        }
        name.failures = 0;
        name.report.last_error = None;
        name.report.address = Some(addr.to_string());
    }

    /// Points the name's sources at `addrs`: unreachable ones move to a new address, new
    /// ones are added up to the name's count.
    async fn adopt(&mut self, index: usize, addrs: Vec<SocketAddr>) {
        let sources = self.core.engine().sources();
        let in_use: Vec<SocketAddr> = sources.iter().map(|s| s.addr).collect();
        let mut fresh = addrs.into_iter().filter(|a| !in_use.contains(a));
        let name_text = self.names[index].text.clone();
        let existing = self.names[index].sources.clone();
        for id in existing {
            if !self.core.unreachable(id) {
                continue;
            }
            if let Some(addr) = fresh.next() {
                tracing::info!(
                    "NTP: {name_text}: {} unreachable, trying {addr}",
                    self.core.engine().sources()[id].addr
                );
                let new_id = self.add_source(&name_text, addr).await;
                self.core.retire(id);
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
        let id = self
            .core
            .add_source(name.to_string(), addr, clock::reading().raw);
        let socket = Arc::new(socket);
        let tx = self.datagrams_tx.clone();
        let reader = socket.clone();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            loop {
                match recv_stamped(&reader, &mut buf).await {
                    Ok((n, _, stamp)) => {
                        let arrived = raw_at_stamp(stamp);
                        if tx.send((id, buf[..n].to_vec(), arrived)).await.is_err() {
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
        Some(id)
    }

    async fn on_datagram(&mut self, id: usize, bytes: &[u8], arrived: Raw) {
        // Queued before its source was retired (a new address, or a key exchange that
        // named another server): nothing checks it any more, so it is not used.
        if self.sockets.get(id).is_none_or(Option::is_none) {
            return;
        }
        let bytes = match self.nts.iter_mut().find(|n| n.source == Some(id)) {
            None => bytes,
            Some(name) => match name.session.as_mut().map(|s| s.reply(bytes)) {
                Some(Ok(ReplyOutcome::Authentic)) => {
                    name.report.authenticated += 1;
                    name.silent_exchanges = 0;
                    &bytes[..HEADER_LEN]
                }
                Some(Ok(ReplyOutcome::Nak)) => {
                    name.report.naks += 1;
                    tracing::info!(
                        "NTS: {} says it cannot read our cookie (NTS NAK): a new key \
                         exchange unless an authenticated reply comes first",
                        name.report.name
                    );
                    return;
                }
                // Never measured: forged, another request's, or no session to check it.
                Some(Err(why)) => {
                    name.report.rejected += 1;
                    tracing::debug!("NTS: dropped a reply from {}: {why}", name.report.name);
                    return;
                }
                None => {
                    name.report.rejected += 1;
                    return;
                }
            },
        };
        let now = clock::reading();
        match self
            .core
            .on_datagram(id, bytes, arrived, now, self.slew_remaining_ns())
        {
            Ok(actions) => self.execute(actions).await,
            // Counted per source (`clockguard sources`); at debug level only, so that a
            // flood of forged datagrams cannot flood the log.
            Err(why) => tracing::debug!(
                "NTP: dropped a {} datagram from {} ({} bytes)",
                rejected_text(why),
                self.core.engine().sources()[id].addr,
                bytes.len()
            ),
        }
    }

    /// Carries out the core's actions, in order, and tells it what came of them. The error
    /// bound is told last, once the corrections asked for with it are in place: until then
    /// it still counts a correction it replaces (a refused step being slewed in).
    async fn execute(&mut self, actions: Vec<Action>) {
        let mut actions = std::collections::VecDeque::from(actions);
        let mut measured = None;
        while let Some(action) = actions.pop_front() {
            match action {
                Action::Send {
                    source,
                    cookie,
                    request,
                } => self.send(source, cookie, &request),
                Action::Serve(clock) => {
                    self.server_clock.send_replace(clock);
                }
                Action::SetFrequency { freq } => {
                    let Some(slew) = &self.slew else { continue };
                    let applied = slew.set_base(KernelRate::from_ppm(freq * 1e6));
                    if let Err(err) = &applied {
                        tracing::error!("NTP: cannot set the frequency: {err}");
                    }
                    let remaining_ns = slew.status().remaining_ns;
                    actions.extend(self.core.frequency_set(freq, applied.is_ok(), remaining_ns));
                }
                Action::WriteDrift(text) => {
                    if !self.write_drift(&text) {
                        self.core.drift_write_failed();
                    }
                }
                Action::Slew { by_ns, whole_ns } => self.slew_by(by_ns, whole_ns).await,
                Action::Measured(report) => measured = Some(report),
            }
        }
        if let (Some(report), Some(bound)) = (measured, &self.bound) {
            let update = match report {
                Some(e) => {
                    // Coarse first: both instants then come out no later than they were
                    // (Measured::from_discipline).
                    let now = clock::monotonic_coarse();
                    let now_raw = clock::reading().raw;
                    bound::Update::Measured(Measured::from_discipline(&e, now_raw, now))
                }
                None => bound::Update::SourcesLost,
            };
            bound.send_replace(Some(update));
        }
    }

    fn send(&mut self, id: usize, cookie: NtpTimestamp, request: &[u8]) {
        let Some(socket) = self.sockets[id].as_ref().map(|io| io.socket.clone()) else {
            return;
        };
        let protected;
        let request = match self.nts.iter_mut().find(|n| n.source == Some(id)) {
            None => request,
            Some(name) => {
                let header: &[u8; HEADER_LEN] = request
                    .try_into()
                    .expect("the core's requests are bare NTP headers");
                let packet = name
                    .session
                    .as_mut()
                    .and_then(|s| s.request(header, random_array(), &random_array()));
                match packet {
                    Some(packet) => {
                        protected = packet;
                        &protected
                    }
                    // No cookie left: this poll goes unanswered (the reach register shows
                    // it) while a key exchange fetches new ones.
                    None => {
                        name.exchange_soon();
                        return;
                    }
                }
            }
        };
        match socket.try_send(request) {
            Ok(_) => {
                if let Some(stamp) = clockguard_sys::take_tx_timestamp(socket.as_raw_fd()) {
                    self.core.sent_at(id, cookie, raw_at_stamp(Some(stamp)));
                }
            }
            Err(err) => tracing::debug!(
                "NTP: sending to {}: {err}",
                self.core.engine().sources()[id].addr
            ),
        }
    }

    /// Asks the slew engine for `by_ns`, part of a measured correction of `whole_ns`
    /// (Action::Slew).
    async fn slew_by(&mut self, by_ns: i64, whole_ns: i64) {
        let Some(slew) = self.slew.clone() else {
            return;
        };
        let offset_s = -(whole_ns as f64) / 1e9;
        match slew.replace_part(by_ns, whole_ns).await {
            Ok(status) => {
                self.core.correction_started();
                if by_ns.abs() >= 1_000_000 {
                    tracing::info!(
                        "NTP: the clock is {offset_s:+.6} s off: slewing at {:+.0} ppm (about {:.0} s)",
                        status.rate_ppm,
                        status.eta_s.unwrap_or(0.0)
                    );
                }
            }
            Err(err @ SlewError::TooLarge { .. }) => {
                if self.core.correction_refused() {
                    tracing::error!("ALERT: NTP: the clock is {offset_s:+.3} s off: {err}");
                }
            }
            Err(err) => tracing::error!("NTP: {err}"),
        }
    }

    /// Replaces the drift file (written aside, then renamed over it); false when it could
    /// not be written (said).
    fn write_drift(&self, text: &str) -> bool {
        let tmp = self.drift_path.with_extension("drift.tmp");
        match std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &self.drift_path)) {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!("NTP: writing {}: {err}", self.drift_path.display());
                false
            }
        }
    }

    fn tracking_report(&self) -> Tracking {
        Tracking {
            slew: self.slew.as_ref().map(SlewHandle::status),
            server: self.serving.as_ref().map(Serving::status),
            ..self.core.tracking(clock::reading())
        }
    }

    fn sources_report(&self) -> SourcesAnswer {
        let unresolved = self
            .names
            .iter()
            .filter(|n| n.sources.is_empty())
            .map(|n| n.text.clone())
            .collect();
        SourcesAnswer {
            nts: self
                .nts
                .iter()
                .map(|n| NtsReport {
                    cookies: n.session.as_ref().map_or(0, ClientSession::cookies),
                    ..n.report.clone()
                })
                .collect(),
            ..self.core.sources(clock::reading(), unresolved)
        }
    }
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
mod tests;
