//! NTS key exchange (RFC 8915 §4) over TLS 1.3 with ALPN "ntske/1". The client side: one
//! request to the NTS-KE server, its records, and the two AEAD keys taken from the TLS
//! exporter. The server side: the listener that answers clients with cookies for our NTP
//! server. The records and their checks are in `clockguard_core::ntp::{nts, nts_server}`.

use std::{
    path::Path,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use clockguard_core::{
    ntp::{
        nts::{self, KeError, KeRecord, KEY_LEN},
        nts_server::{self, ServerKeys, SessionKeys},
    },
    status::ServerCounters,
};
use rustls::{pki_types::ServerName, ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::random_array;

/// The whole exchange (connect, handshake, answer) must end within this.
const KEY_EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read: eight cookies of a few hundred bytes fit many times over.
const MAX_ANSWER: usize = 64 * 1024;
/// The largest request the server reads: a client's request is a few records.
const MAX_REQUEST: usize = 16 * 1024;
/// The server's budget for one exchange (handshake, request, answer); a client on the
/// same continent needs a few round trips (ntpd-rs allows 1 s).
const SERVER_EXCHANGE_TIMEOUT: Duration = Duration::from_secs(2);
/// Key exchanges the server runs at once, and from one IP address: a connection beyond
/// either is closed at once, so that idle connections from one place cannot keep
/// everyone else's exchanges waiting.
const MAX_CONCURRENT_EXCHANGES: usize = 128;
const MAX_EXCHANGES_PER_ADDRESS: usize = 8;

/// What a key exchange gives: the keys, the first cookies, and where to send NTP.
pub struct KeyExchange {
    pub c2s: [u8; KEY_LEN],
    pub s2c: [u8; KEY_LEN],
    pub cookies: Vec<Vec<u8>>,
    /// The NTP server and port the NTS-KE server named (its own address and 123 when it
    /// named none).
    pub ntp_host: String,
    pub ntp_port: u16,
}

/// The TLS client configuration for NTS-KE: TLS 1.3 only (RFC 8915 §3), ALPN "ntske/1",
/// the system's trust store and the certificates in `ca` (a PEM file), if given.
pub fn tls_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if let Some(ca) = ca {
        let certs = CertificateDer::pem_file_iter(ca)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .with_context(|| format!("ntp.nts_ca: cannot read {}", ca.display()))?;
        if certs.is_empty() {
            bail!("ntp.nts_ca: {} holds no PEM certificate", ca.display());
        }
        for cert in certs {
            roots
                .add(cert)
                .with_context(|| format!("ntp.nts_ca: {}: a certificate", ca.display()))?;
        }
    } else if added == 0 {
        tracing::warn!(
            "NTS: the system trust store has no certificate ({} errors reading it) and \
             ntp.nts_ca is unset: no NTS-KE server can be verified",
            native.errors.len()
        );
    }
    let mut config = ClientConfig::builder_with_provider(ring_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 with the ring provider")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![nts::ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// ring's provider (deprecated in rustls 0.23.48 for lacking post-quantum key exchange,
/// which only aws-lc-rs has; that would add a cmake build of AWS-LC). X25519 and the
/// P-curves are what chrony's and ntpd-rs's NTS-KE servers and clients offer.
fn ring_provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The TLS server configuration for NTS-KE: TLS 1.3 only, ALPN "ntske/1", the
/// certificate chain in `cert` and the private key in `key` (PEM files).
pub fn server_tls_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .with_context(|| format!("ntp.nts_cert: cannot read {}", cert.display()))?;
    if chain.is_empty() {
        bail!("ntp.nts_cert: {} holds no PEM certificate", cert.display());
    }
    let private = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "ntp.nts_key: cannot read a PEM private key from {}",
            key.display()
        )
    })?;
    let mut config = ServerConfig::builder_with_provider(ring_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 with the ring provider")?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .with_context(|| {
            format!(
                "ntp.nts_cert {} and ntp.nts_key {}: not a certificate and its key",
                cert.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = vec![nts::ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// Reads one NTS-KE message (up to its End of Message) from `stream`, at most `max` bytes.
async fn read_message<S: AsyncRead + Unpin>(stream: &mut S, max: usize) -> Result<Vec<KeRecord>> {
    let mut message = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = stream
            .read(&mut chunk)
            .await
            .context("reading the NTS-KE message")?;
        if n == 0 {
            bail!("{}", KeError::Incomplete);
        }
        message.extend_from_slice(&chunk[..n]);
        match nts::parse_message(&message) {
            Ok(records) => return Ok(records),
            Err(KeError::Incomplete) if message.len() < max => {}
            Err(KeError::Incomplete) => {
                return Err(KeError::Malformed(format!("a message over {max} bytes")).into())
            }
            Err(err) => return Err(err.into()),
        }
    }
}

/// The two keys of a TLS connection's NTS session (§5.1), from its exporter.
fn export_keys<Data>(connection: &rustls::ConnectionCommon<Data>) -> Result<SessionKeys> {
    let mut keys = SessionKeys {
        c2s: [0; KEY_LEN],
        s2c: [0; KEY_LEN],
    };
    for (key, to_server) in [(&mut keys.c2s, true), (&mut keys.s2c, false)] {
        *key = connection
            .export_keying_material(
                [0u8; KEY_LEN],
                nts::EXPORTER_LABEL.as_bytes(),
                Some(&nts::exporter_context(to_server)),
            )
            .context("the TLS exporter")?;
    }
    Ok(keys)
}

/// Starts the NTS-KE server on `listener` on a thread of its own, so that TLS handshakes
/// (public-key operations, tens of µs to ms each) never delay the daemon's own loop, the
/// NTP client or the NTP server.
pub fn spawn_key_exchange_server(
    listener: std::net::TcpListener,
    tls: Arc<ServerConfig>,
    keys: Arc<RwLock<ServerKeys>>,
    ntp_port: u16,
    counters: Arc<Mutex<ServerCounters>>,
) -> Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("NTS-KE: the key exchange thread's runtime")?;
    std::thread::Builder::new()
        .name("nts-ke".into())
        .spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => {
                        serve_key_exchanges(listener, tls, keys, ntp_port, counters).await;
                    }
                    Err(err) => tracing::error!("NTS-KE: the listener: {err}"),
                }
            });
        })
        .context("NTS-KE: starting its thread")?;
    Ok(())
}

/// Connections being served: in all, and per client address.
#[derive(Default)]
struct Admission {
    total: usize,
    by_address: std::collections::HashMap<std::net::IpAddr, usize>,
}

/// A connection's place in [`Admission`], given back when it ends.
struct Admitted {
    admission: Arc<Mutex<Admission>>,
    address: std::net::IpAddr,
}

impl Admitted {
    /// A place for a connection from `address`, or None when the server or that address
    /// is at its limit.
    fn new(admission: &Arc<Mutex<Admission>>, address: std::net::IpAddr) -> Option<Admitted> {
        let mut a = admission.lock().expect("not poisoned");
        let from_address = a.by_address.get(&address).copied().unwrap_or(0);
        if a.total >= MAX_CONCURRENT_EXCHANGES || from_address >= MAX_EXCHANGES_PER_ADDRESS {
            return None;
        }
        a.total += 1;
        a.by_address.insert(address, from_address + 1);
        Some(Admitted {
            admission: admission.clone(),
            address,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut a = self.admission.lock().expect("not poisoned");
        a.total -= 1;
        if let Some(n) = a.by_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                a.by_address.remove(&self.address);
            }
        }
    }
}

/// Answers NTS-KE clients on `listener`: each gets eight cookies sealed with the current
/// key for the NTP server on port `ntp_port`. At most [`MAX_CONCURRENT_EXCHANGES`] at
/// once and [`MAX_EXCHANGES_PER_ADDRESS`] from one address, each within
/// [`SERVER_EXCHANGE_TIMEOUT`]; a connection beyond that is closed unanswered (counted as
/// a failed exchange).
async fn serve_key_exchanges(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    keys: Arc<RwLock<ServerKeys>>,
    ntp_port: u16,
    counters: Arc<Mutex<ServerCounters>>,
) {
    let admission = Arc::new(Mutex::new(Admission::default()));
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!("NTS-KE: accept: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(admitted) = Admitted::new(&admission, peer.ip().to_canonical()) else {
            drop(tcp);
            counters
                .lock()
                .expect("not poisoned")
                .nts_key_exchange_errors += 1;
            tracing::debug!("NTS-KE: {peer} turned away: too many exchanges at once");
            continue;
        };
        let (acceptor, keys, counters) = (acceptor.clone(), keys.clone(), counters.clone());
        tokio::spawn(async move {
            let served = tokio::time::timeout(
                SERVER_EXCHANGE_TIMEOUT,
                serve_exchange(&acceptor, tcp, &keys, ntp_port),
            )
            .await
            .unwrap_or_else(|_| bail!("not done within {} s", SERVER_EXCHANGE_TIMEOUT.as_secs()));
            drop(admitted);
            let mut c = counters.lock().expect("not poisoned");
            match served {
                Ok(()) => c.nts_key_exchanges += 1,
                Err(err) => {
                    c.nts_key_exchange_errors += 1;
                    drop(c);
                    tracing::debug!("NTS-KE with {peer}: {err:#}");
                }
            }
        });
    }
}

/// One client's key exchange: Ok when it was given cookies.
async fn serve_exchange(
    acceptor: &tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    keys: &RwLock<ServerKeys>,
    ntp_port: u16,
) -> Result<()> {
    let mut tls = acceptor.accept(tcp).await.context("TLS handshake")?;
    if tls.get_ref().1.alpn_protocol() != Some(nts::ALPN) {
        bail!("the client did not ask for ALPN \"ntske/1\"");
    }
    let (answer, agreed) = match read_message(&mut tls, MAX_REQUEST).await {
        Ok(request) => {
            let session = export_keys(tls.get_ref().1)?;
            nts_server::ke_answer(&request, ntp_port, || {
                keys.read()
                    .expect("not poisoned")
                    .seal(&session, &random_array())
            })
        }
        // A request that cannot be read gets "bad request" (§4.1.3).
        Err(err) if err.downcast_ref::<KeError>().is_some() => {
            (vec![KeRecord::Error(1), KeRecord::EndOfMessage], false)
        }
        Err(err) => return Err(err),
    };
    tls.write_all(&nts::encode_records(&answer)).await?;
    tls.flush().await?;
    let _ = tls.shutdown().await;
    if !agreed {
        bail!("refused: {answer:?}");
    }
    Ok(())
}

/// One key exchange with the NTS-KE server at `host`:`port`, its certificate verified for
/// `host`.
pub async fn key_exchange(config: Arc<ClientConfig>, host: &str, port: u16) -> Result<KeyExchange> {
    tokio::time::timeout(KEY_EXCHANGE_TIMEOUT, exchange(config, host, port))
        .await
        .unwrap_or_else(|_| bail!("no answer within {} s", KEY_EXCHANGE_TIMEOUT.as_secs()))
}

async fn exchange(config: Arc<ClientConfig>, host: &str, port: u16) -> Result<KeyExchange> {
    let name = ServerName::try_from(host.to_string())
        .with_context(|| format!("{host:?} is not a TLS server name"))?;
    let tcp = TcpStream::connect((host, port))
        .await
        .with_context(|| format!("connecting to {host}:{port}"))?;
    let peer = tcp.peer_addr()?;
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .context("TLS handshake")?;
    if tls.get_ref().1.alpn_protocol() != Some(nts::ALPN) {
        bail!("the server did not agree to ALPN \"ntske/1\"");
    }
    tls.write_all(&nts::client_request()).await?;
    tls.flush().await?;
    let records = read_message(&mut tls, MAX_ANSWER).await?;
    let outcome = nts::client_outcome(&records)?;
    let SessionKeys { c2s, s2c } = export_keys(tls.get_ref().1)?;
    // The server may close first; its close_notify is not awaited.
    let _ = tls.shutdown().await;
    Ok(KeyExchange {
        c2s,
        s2c,
        cookies: outcome.cookies,
        ntp_host: outcome.server.unwrap_or_else(|| peer.ip().to_string()),
        ntp_port: outcome.port.unwrap_or(123),
    })
}
