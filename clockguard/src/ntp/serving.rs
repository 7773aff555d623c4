//! The NTP server's I/O shell (`[ntp] serve`): the UDP socket, and with `nts_ke` the NTS-KE
//! listener and the timer that rotates the key sealing the cookies. What each datagram
//! gets is decided by [`server::answer`]; the key exchange's records by
//! `clockguard_core::ntp::nts_server`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use anyhow::{Context, Result};
use clockguard_core::{
    ntp::nts_server::ServerKeys,
    status::{ServerCounters, ServerStatus},
};
use tokio::{net::UdpSocket, sync::watch};

use super::{
    client::{enable_rx_timestamps, recv_stamped, MAX_DATAGRAM},
    fill_random, nts_ke,
    packet::NtpTimestamp,
    random_array, secret_array,
    server::{self, DropReason, RateLimiter, Served, ServerClock},
};
use crate::{clock, config::NtpConfig};

/// The server as the status shows it.
pub struct Serving {
    listen: String,
    nts_ke: Option<String>,
    counters: Arc<Mutex<ServerCounters>>,
}

impl Serving {
    pub fn status(&self) -> ServerStatus {
        ServerStatus {
            listen: self.listen.clone(),
            nts_ke: self.nts_ke.clone(),
            counters: *self.counters.lock().expect("not poisoned"),
        }
    }
}

/// Where the cookie keys are kept between runs (in the state directory, root only).
const NTS_KEYS_FILE: &str = "nts-server-keys";

/// Binds `serve` (and `nts_ke`) and starts answering, with our clock as `clock` says it
/// is. None without `serve`. A certificate or key that cannot be read, or an address that
/// cannot be bound, stops the daemon with its name. The cookie keys are kept in
/// `state_dir`.
pub async fn start(
    config: &NtpConfig,
    clock: watch::Receiver<ServerClock>,
    state_dir: &Path,
) -> Result<Option<Serving>> {
    let Some(addr) = &config.serve else {
        return Ok(None);
    };
    let socket = UdpSocket::bind(addr)
        .await
        .with_context(|| format!("ntp.serve: cannot bind {addr}"))?;
    let bound = socket.local_addr()?;
    let counters = Arc::new(Mutex::new(ServerCounters::default()));
    let nts = match (&config.nts_ke, &config.nts_cert, &config.nts_key) {
        (Some(ke), Some(cert), Some(key)) => {
            let tls = nts_ke::server_tls_config(cert, key)?;
            let listener = std::net::TcpListener::bind(ke)
                .with_context(|| format!("ntp.nts_ke: cannot bind {ke}"))?;
            let ke_bound = listener.local_addr()?;
            let keys_path = state_dir.join(NTS_KEYS_FILE);
            let keys = Arc::new(RwLock::new(initial_keys(&keys_path)?));
            tokio::spawn(rotate_keys(
                keys.clone(),
                Duration::from_secs(config.nts_key_rotation_s),
                keys_path,
            ));
            nts_ke::spawn_key_exchange_server(
                listener,
                tls,
                keys.clone(),
                bound.port(),
                counters.clone(),
            )?;
            tracing::info!("NTS: key exchange (TLS 1.3) on {ke_bound}, for NTP on {bound}");
            Some((keys, ke_bound))
        }
        _ => None,
    };
    tracing::info!("NTP: serving on {bound}");
    enable_rx_timestamps(&socket);
    let limiter = RateLimiter::new(config.rate_limit_interval, config.rate_limit_burst, 4096);
    tokio::spawn(serve(
        socket,
        clock,
        limiter,
        nts.as_ref().map(|(keys, _)| keys.clone()),
        counters.clone(),
    ));
    Ok(Some(Serving {
        listen: bound.to_string(),
        nts_ke: nts.map(|(_, addr)| addr.to_string()),
        counters,
    }))
}

/// The cookie keys at start: those the last run saved at `path`, with a new one made
/// current (a restart is a rotation), so that the cookies clients hold stay valid across
/// a restart (as chrony's `ntsdumpdir`); saved again at once. A file that cannot be read
/// is said and replaced: clients then get an NTS NAK and make a new key exchange.
fn initial_keys(path: &Path) -> Result<ServerKeys> {
    let key = secret_array().context("NTS: the first cookie key")?;
    let fresh = |key| ServerKeys::new(u32::from_be_bytes(random_array()), key);
    let keys = match std::fs::read_to_string(path) {
        Ok(text) => match ServerKeys::from_text(&text) {
            Ok(mut kept) => {
                let id = kept.current_id().wrapping_add(1);
                kept.rotate(id, key);
                tracing::info!(
                    "NTS: the cookie keys of the last run kept from {}; key {id} is new",
                    path.display()
                );
                kept
            }
            Err(err) => {
                tracing::warn!(
                    "NTS: {}: {err}; starting with a new cookie key (clients make a new key \
                     exchange)",
                    path.display()
                );
                fresh(key)
            }
        },
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => fresh(key),
        Err(err) => {
            tracing::warn!(
                "NTS: reading {}: {err}; starting with a new cookie key",
                path.display()
            );
            fresh(key)
        }
    };
    save_keys(path, &keys.to_text());
    Ok(keys)
}

/// Writes the keys' text to `path`, readable by root only, replacing it whole (a temporary
/// file renamed over it). A failure is said: the keys then live only until the next
/// restart.
fn save_keys(path: &Path, text: &str) {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let tmp = path.with_extension("tmp");
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(err) = written {
        tracing::warn!(
            "NTS: cannot save the cookie keys to {}: {err}; after a restart clients make a \
             new key exchange",
            path.display()
        );
    }
}

/// Every `period`, a new random key seals the cookies given from then on; the oldest kept
/// is forgotten (see [`ServerKeys::rotate`]), and the keys are saved to `path`.
async fn rotate_keys(keys: Arc<RwLock<ServerKeys>>, period: Duration, path: PathBuf) {
    let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        timer.tick().await;
        let key = match secret_array() {
            Ok(key) => key,
            Err(err) => {
                tracing::warn!("NTS: the cookie key is not replaced this time: {err}");
                continue;
            }
        };
        let (id, text) = {
            let mut keys = keys.write().expect("not poisoned");
            let id = keys.current_id().wrapping_add(1);
            keys.rotate(id, key);
            (id, keys.to_text())
        };
        save_keys(&path, &text);
        tracing::info!("NTS: the cookie key is now key {id}");
    }
}

async fn serve(
    socket: UdpSocket,
    clock_rx: watch::Receiver<ServerClock>,
    mut limiter: RateLimiter,
    nts_keys: Option<Arc<RwLock<ServerKeys>>>,
    counters: Arc<Mutex<ServerCounters>>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, from, stamp): (usize, SocketAddr, _) = match recv_stamped(&socket, &mut buf).await {
            Ok(x) => x,
            Err(err) => {
                tracing::warn!("NTP server: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let rx = NtpTimestamp::from_unix_ns(stamp.unwrap_or_else(clock::realtime_ns));
        let clock = clock_rx.borrow().clone();
        let (served, reply) = {
            let keys = nts_keys
                .as_ref()
                .map(|keys| keys.read().expect("not poisoned"));
            server::answer(
                &buf[..n],
                from.ip(),
                rx,
                clock::monotonic(),
                &clock,
                &mut limiter,
                keys.as_deref(),
                &mut fill_random,
                &mut || NtpTimestamp::from_unix_ns(clock::realtime_ns()),
            )
        };
        {
            let mut c = counters.lock().expect("not poisoned");
            match served {
                Served::Answered => c.answered += 1,
                Served::Kiss => c.kiss_rate += 1,
                Served::NtsAnswered => c.nts_answered += 1,
                Served::NtsNak => c.nts_naks += 1,
                Served::Dropped(DropReason::Malformed) => c.malformed += 1,
                Served::Dropped(DropReason::NotARequest) => c.not_a_request += 1,
                Served::Dropped(DropReason::RateLimited) => c.rate_limited += 1,
            }
        }
        if let Some(reply) = reply {
            if socket.send_to(&reply, from).await.is_err() {
                counters.lock().expect("not poisoned").send_errors += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clockguard_core::ntp::{
        nts::{ClientSession, ReplyOutcome},
        packet::{Leap, Packet, HEADER_LEN},
    };

    use super::*;

    /// A CA, and a certificate for 127.0.0.1 it signed, as PEM files in `dir`: (CA, server
    /// certificate, server key).
    fn test_pki(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let paths = (
            dir.join("ca.pem"),
            dir.join("server.pem"),
            dir.join("server.key"),
        );
        std::fs::write(&paths.0, ca.pem()).unwrap();
        std::fs::write(&paths.1, cert.pem()).unwrap();
        std::fs::write(&paths.2, key.serialize_pem()).unwrap();
        paths
    }

    fn server_clock() -> ServerClock {
        ServerClock {
            leap: Leap::None,
            stratum: 2,
            precision: -20,
            reference_id: [127, 0, 0, 1],
            reference_ts: NtpTimestamp::from_unix_ns(clock::realtime_ns()),
            root_delay_s: 0.001,
            root_dispersion_s: 0.001,
        }
    }

    /// clockguard's NTP server with NTS-KE, both on ephemeral loopback ports, with a test
    /// PKI (made once) and its state in `dir`; and the CA's certificate.
    async fn nts_server(dir: &Path) -> (Serving, std::path::PathBuf) {
        let (ca, cert, key) = if dir.join("ca.pem").exists() {
            (
                dir.join("ca.pem"),
                dir.join("server.pem"),
                dir.join("server.key"),
            )
        } else {
            test_pki(dir)
        };
        let config = NtpConfig {
            serve: Some("127.0.0.1:0".into()),
            nts_ke: Some("127.0.0.1:0".into()),
            nts_cert: Some(cert),
            nts_key: Some(key),
            ..NtpConfig::default()
        };
        let (_clock_tx, clock_rx) = watch::channel(server_clock());
        let serving = start(&config, clock_rx, dir).await.unwrap().unwrap();
        (serving, ca)
    }

    /// The server's counters once `done` holds of them (the server counts an exchange
    /// after its answer is out), or as they are after 1 s.
    async fn counters_when(
        serving: &Serving,
        done: impl Fn(&ServerCounters) -> bool,
    ) -> ServerCounters {
        let mut counters = serving.status().counters;
        for _ in 0..50 {
            if done(&counters) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            counters = serving.status().counters;
        }
        counters
    }

    /// One NTS request from `session` (transmit timestamp `sent`) to the NTP server at
    /// `ntp`, and the datagram that answered it (5 s at most).
    async fn nts_request(
        session: &mut ClientSession,
        ntp: SocketAddr,
        sent: NtpTimestamp,
    ) -> Vec<u8> {
        let header: [u8; HEADER_LEN] = Packet::client_request(sent, 4).to_bytes();
        let request = session.request(&header, [7; 32], &[8; 16]).unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.send_to(&request, ntp).await.unwrap();
        let mut buf = [0u8; 2048];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        buf[..n].to_vec()
    }

    /// Our NTS client against our NTS server, over loopback: the key exchange (TLS 1.3)
    /// names the NTP port and gives eight cookies; an NTS request gets an authentic reply
    /// with its cookie replaced; a client that does not trust the CA gets nothing.
    #[tokio::test]
    async fn our_client_gets_keys_cookies_and_authentic_time_from_our_server() {
        let dir = tempfile::tempdir().unwrap();
        let (serving, ca) = nts_server(dir.path()).await;
        let status = serving.status();
        let ntp: SocketAddr = status.listen.parse().unwrap();
        let ke: SocketAddr = status.nts_ke.unwrap().parse().unwrap();

        let tls = nts_ke::tls_config(Some(&ca)).unwrap();
        let exchange = nts_ke::key_exchange(tls, "127.0.0.1", ke.port())
            .await
            .unwrap();
        assert_eq!(
            (exchange.ntp_host.as_str(), exchange.ntp_port),
            ("127.0.0.1", ntp.port())
        );
        assert_eq!(exchange.cookies.len(), 8);

        let mut session = ClientSession::new(exchange.c2s, exchange.s2c, exchange.cookies);
        let sent = NtpTimestamp(0x1234_5678_9abc_def0);
        let answer = nts_request(&mut session, ntp, sent).await;
        assert_eq!(session.reply(&answer), Ok(ReplyOutcome::Authentic));
        assert_eq!(session.cookies(), 8, "the cookie spent came back");
        let reply = Packet::parse(&answer).unwrap();
        assert_eq!((reply.stratum, reply.origin_ts), (2, sent));

        // A client that does not trust the test CA: the handshake fails, counted.
        let untrusting = nts_ke::tls_config(None).unwrap();
        let err = nts_ke::key_exchange(untrusting, "127.0.0.1", ke.port())
            .await
            .err()
            .expect("an untrusted certificate is refused");
        assert!(format!("{err:#}").contains("certificate"), "{err:#}");
        let counters = counters_when(&serving, |c| {
            c.nts_key_exchange_errors > 0 && c.nts_key_exchanges > 0
        })
        .await;
        assert_eq!(
            (
                counters.nts_key_exchanges,
                counters.nts_key_exchange_errors,
                counters.nts_answered,
                counters.answered
            ),
            (1, 1, 1, 0)
        );
    }

    /// A restart keeps the cookies clients hold valid: the keys are saved (root only) and
    /// read back, a new one made current.
    #[tokio::test]
    async fn cookies_outlive_a_restart() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (first, ca) = nts_server(dir.path()).await;
        let ke: SocketAddr = first.status().nts_ke.unwrap().parse().unwrap();
        let tls = nts_ke::tls_config(Some(&ca)).unwrap();
        let exchange = nts_ke::key_exchange(tls, "127.0.0.1", ke.port())
            .await
            .unwrap();
        let saved = dir.path().join(NTS_KEYS_FILE);
        assert_eq!(
            std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // "The restart": another server on the same state directory.
        let (second, _) = nts_server(dir.path()).await;
        assert_eq!(std::fs::read_to_string(&saved).unwrap().lines().count(), 2);
        let ntp: SocketAddr = second.status().listen.parse().unwrap();
        let mut session = ClientSession::new(exchange.c2s, exchange.s2c, exchange.cookies);
        let answer = nts_request(&mut session, ntp, NtpTimestamp(5)).await;
        assert_eq!(session.reply(&answer), Ok(ReplyOutcome::Authentic));
        // A file that is not keys is said and replaced, not fatal.
        std::fs::write(&saved, "not keys\n").unwrap();
        let (_third, _) = nts_server(dir.path()).await;
        assert_eq!(std::fs::read_to_string(&saved).unwrap().lines().count(), 1);
    }

    /// One address cannot hold the key exchange: beyond 8 connections at once from it, a
    /// connection is closed at once, and idle ones are closed after 2 s.
    #[tokio::test]
    async fn idle_connections_from_one_address_are_capped_and_timed_out() {
        use tokio::io::AsyncReadExt;
        let dir = tempfile::tempdir().unwrap();
        let (serving, ca) = nts_server(dir.path()).await;
        let ke: SocketAddr = serving.status().nts_ke.unwrap().parse().unwrap();
        let mut idle = Vec::new();
        for _ in 0..8 {
            idle.push(tokio::net::TcpStream::connect(ke).await.unwrap());
        }
        // Give the server time to admit the eight before the ninth arrives.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut ninth = tokio::net::TcpStream::connect(ke).await.unwrap();
        let mut byte = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(1), ninth.read(&mut byte))
            .await
            .expect("the ninth connection is closed at once, not held");
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
        // The idle ones are closed by the server's 2 s budget; then exchanges work again.
        for mut stream in idle {
            let read = tokio::time::timeout(Duration::from_secs(4), stream.read(&mut byte))
                .await
                .expect("an idle connection is closed within the budget");
            assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        }
        let tls = nts_ke::tls_config(Some(&ca)).unwrap();
        let exchange = nts_ke::key_exchange(tls, "127.0.0.1", ke.port())
            .await
            .unwrap();
        assert_eq!(exchange.cookies.len(), 8);
        let counters = counters_when(&serving, |c| {
            c.nts_key_exchanges + c.nts_key_exchange_errors >= 10
        })
        .await;
        assert_eq!(
            (counters.nts_key_exchanges, counters.nts_key_exchange_errors),
            (1, 9)
        );
    }

    #[tokio::test]
    async fn a_missing_certificate_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let config = NtpConfig {
            serve: Some("127.0.0.1:0".into()),
            nts_ke: Some("127.0.0.1:0".into()),
            nts_cert: Some(dir.path().join("absent.pem")),
            nts_key: Some(dir.path().join("absent.key")),
            ..NtpConfig::default()
        };
        let (_clock_tx, clock_rx) = watch::channel(server_clock());
        let err = start(&config, clock_rx, dir.path()).await.err().unwrap();
        assert!(
            format!("{err:#}").contains("ntp.nts_cert: cannot read")
                && format!("{err:#}").contains("absent.pem"),
            "{err:#}"
        );
    }
}
