//! NTS key exchange (RFC 8915 §4), the client side: TLS 1.3 with ALPN "ntske/1" to the
//! NTS-KE server, one request, the server's records, and the two AEAD keys taken from the
//! TLS exporter. The records and their checks are in `clockguard_core::ntp::nts`.

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::{bail, Context, Result};
use clockguard_core::ntp::nts::{self, KeError, KEY_LEN};
use rustls::{pki_types::ServerName, ClientConfig, RootCertStore};
use rustls_pki_types::{pem::PemObject, CertificateDer};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// The whole exchange (connect, handshake, answer) must end within this.
const KEY_EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read: eight cookies of a few hundred bytes fit many times over.
const MAX_ANSWER: usize = 64 * 1024;

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
    // ring's provider (deprecated in rustls 0.23.48 for lacking post-quantum key exchange,
    // which only aws-lc-rs has; that would add a cmake build of AWS-LC). X25519 and the
    // P-curves are what chrony's and ntpd-rs's NTS-KE servers offer.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 with the ring provider")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![nts::ALPN.to_vec()];
    Ok(Arc::new(config))
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
    let mut answer = Vec::new();
    let records = loop {
        let mut chunk = [0u8; 4096];
        let n = tls.read(&mut chunk).await.context("reading the answer")?;
        if n == 0 {
            bail!("{}", KeError::Incomplete);
        }
        answer.extend_from_slice(&chunk[..n]);
        match nts::parse_message(&answer) {
            Ok(records) => break records,
            Err(KeError::Incomplete) if answer.len() < MAX_ANSWER => {}
            Err(KeError::Incomplete) => bail!("an answer over {MAX_ANSWER} bytes"),
            Err(err) => return Err(err.into()),
        }
    };
    let outcome = nts::client_outcome(&records)?;
    let connection = tls.get_ref().1;
    let mut c2s = [0u8; KEY_LEN];
    let mut s2c = [0u8; KEY_LEN];
    for (key, to_server) in [(&mut c2s, true), (&mut s2c, false)] {
        *key = connection
            .export_keying_material(
                [0u8; KEY_LEN],
                nts::EXPORTER_LABEL.as_bytes(),
                Some(&nts::exporter_context(to_server)),
            )
            .context("the TLS exporter")?;
    }
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
