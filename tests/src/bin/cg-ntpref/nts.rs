//! NTS for the benchmarks: a blocking NTS-KE client (rustls over a std TCP stream) and
//! `nts-ke-load`, key exchanges back to back from several threads. Unlike the rest of
//! cg-ntpref this takes clockguard's own NTS codec (`clockguard_core::ntp::nts`): it
//! only loads clockguard's server; chronyd is the independent check of both sides
//! (t_71_chrony).

use std::{
    net::TcpStream,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use clockguard_core::ntp::nts::{self, ClientSession, KeError, KEY_LEN};
use rustls::{pki_types::ServerName, ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use rustls_pki_types::{pem::PemObject, CertificateDer};

use super::*;

/// TLS 1.3 with ALPN "ntske/1", trusting only the CA certificates in `ca` (PEM).
pub(crate) fn tls_config(ca: &Path) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
        roots
            .add(cert.map_err(|e| format!("{}: {e}", ca.display()))?)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![nts::ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// One key exchange with the NTS-KE server at `server` (its certificate verified for its
/// IP address): the session and the NTP server's address it named.
pub(crate) fn key_exchange(
    config: &Arc<ClientConfig>,
    server: SocketAddr,
) -> Result<(ClientSession, SocketAddr), String> {
    let name = ServerName::IpAddress(server.ip().into());
    let connection = ClientConnection::new(config.clone(), name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect_timeout(&server, Duration::from_secs(5))
        .map_err(|e| format!("connect {server}: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut tls = StreamOwned::new(connection, tcp);
    tls.write_all(&nts::client_request())
        .map_err(|e| format!("NTS-KE to {server}: {e}"))?;
    let mut answer = Vec::new();
    let records = loop {
        let mut chunk = [0u8; 4096];
        let n = tls
            .read(&mut chunk)
            .map_err(|e| format!("NTS-KE from {server}: {e}"))?;
        if n == 0 {
            return Err(format!("NTS-KE from {server}: {}", KeError::Incomplete));
        }
        answer.extend_from_slice(&chunk[..n]);
        match nts::parse_message(&answer) {
            Ok(records) => break records,
            Err(KeError::Incomplete) => {}
            Err(err) => return Err(format!("NTS-KE from {server}: {err}")),
        }
    };
    let outcome = nts::client_outcome(&records).map_err(|e| e.to_string())?;
    let mut keys = [[0u8; KEY_LEN]; 2];
    for (key, to_server) in keys.iter_mut().zip([true, false]) {
        *key = tls
            .conn
            .export_keying_material(
                [0u8; KEY_LEN],
                nts::EXPORTER_LABEL.as_bytes(),
                Some(&nts::exporter_context(to_server)),
            )
            .map_err(|e| e.to_string())?;
    }
    tls.conn.send_close_notify();
    let _ = tls.flush();
    let ntp = SocketAddr::new(server.ip(), outcome.port.unwrap_or(123));
    Ok((ClientSession::new(keys[0], keys[1], outcome.cookies), ntp))
}

/// `nts-ke-load ADDR:PORT --ca FILE --seconds S [--threads N]`: key exchanges back to back
/// from N threads (default 4) for S seconds; how many completed and failed.
pub(crate) fn nts_ke_load_cmd(args: &[String]) -> Result<Value, String> {
    let opts = Opts::parse(args, &["--ca", "--seconds", "--threads"], 1)?;
    let server = resolve(&opts.positional[0])?;
    let config = tls_config(Path::new(opts.required("--ca")?))?;
    let seconds: f64 = opts.parsed("--seconds", 10.0)?;
    let threads: usize = opts.parsed("--threads", 4)?;
    if !(seconds > 0.0 && seconds <= 600.0 && (1..=64).contains(&threads)) {
        return Err("nts-ke-load: --seconds 0..600, --threads 1..64".into());
    }
    // One exchange first: a server that refuses is an error, not a rate of 0.
    key_exchange(&config, server)?;
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let last_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let (config, done, failed, last_error) = (&config, &done, &failed, &last_error);
            scope.spawn(move || {
                while Instant::now() < end {
                    match key_exchange(config, server) {
                        Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                        Err(err) => {
                            *last_error.lock().expect("not poisoned") = Some(err);
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            });
        }
    });
    let elapsed = start.elapsed().as_secs_f64();
    let done = done.load(Ordering::Relaxed);
    Ok(json!({
        "exchanges": done,
        "failed": failed.load(Ordering::Relaxed),
        "last_error": *last_error.lock().expect("not poisoned"),
        "threads": threads,
        "seconds": elapsed,
        "exchanges_per_s": done as f64 / elapsed,
    }))
}
