//! The control socket (runtime_dir/control.sock, 0600): newline-delimited JSON.
//!
//! Requests: `{"cmd":"status"}` → one status object; `{"cmd":"events","follow":bool}` →
//! the recent records, one per line, then (follow) every new record as it is journaled;
//! `{"cmd":"tracking"}` and `{"cmd":"sources"}` → the NTP service's state (chronyc's);
//! `{"cmd":"services"}` → the tracked services only (what `service-check` polls, as a
//! keepalived track_script, every second: no /proc or DMI reads of a full status).
//! A bad request gets `{"error": "..."}` and the connection is closed.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{broadcast, mpsc, oneshot},
};

use crate::ntp::client::NtpHandle;

pub const SOCKET_NAME: &str = "control.sock";
/// A request line longer than this is refused (no unbounded buffering).
const MAX_REQUEST: usize = 4096;

pub fn socket_path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join(SOCKET_NAME)
}

#[derive(Debug, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    Status {},
    Events {
        #[serde(default)]
        follow: bool,
    },
    Tracking {},
    Sources {},
    Services {},
}

/// What a connection asks of the daemon's main loop.
pub enum Query {
    Status(oneshot::Sender<Value>),
    /// The tracked services' part of the status.
    Services(oneshot::Sender<Value>),
    /// The recent records (JSON lines), oldest first.
    Recent(oneshot::Sender<Vec<Arc<str>>>),
}

/// Binds the socket, refusing to take over one that a running daemon still answers on.
pub async fn bind(runtime_dir: &Path) -> Result<UnixListener> {
    std::fs::create_dir_all(runtime_dir)
        .with_context(|| format!("cannot create runtime directory {}", runtime_dir.display()))?;
    let path = socket_path(runtime_dir);
    if path.exists() {
        if UnixStream::connect(&path).await.is_ok() {
            bail!(
                "another clockguard is already running (it answers on {})",
                path.display()
            );
        }
        std::fs::remove_file(&path)
            .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(&path).with_context(|| format!("cannot bind {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

pub async fn serve(
    listener: UnixListener,
    queries: mpsc::Sender<Query>,
    live: broadcast::Sender<Arc<str>>,
    ntp: Option<NtpHandle>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of fds, say: back off instead of spinning on the same error.
                tracing::warn!("control socket accept: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let queries = queries.clone();
        let live = live.subscribe();
        let ntp = ntp.clone();
        tokio::spawn(async move {
            if let Err(err) = handle(stream, queries, live, ntp).await {
                tracing::debug!("control connection: {err:#}");
            }
        });
    }
}

async fn handle(
    stream: UnixStream,
    queries: mpsc::Sender<Query>,
    mut live: broadcast::Receiver<Arc<str>>,
    ntp: Option<NtpHandle>,
) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(MAX_REQUEST as u64 + 1));
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let request = match parse_request(&line) {
        Ok(r) => r,
        Err(message) => {
            write_line(&mut write, &json!({ "error": message }).to_string()).await?;
            return Ok(());
        }
    };
    match request {
        Request::Status {} => {
            let (tx, rx) = oneshot::channel();
            queries.send(Query::Status(tx)).await?;
            write_line(&mut write, &rx.await?.to_string()).await?;
        }
        Request::Services {} => {
            let (tx, rx) = oneshot::channel();
            queries.send(Query::Services(tx)).await?;
            write_line(&mut write, &rx.await?.to_string()).await?;
        }
        Request::Tracking {} | Request::Sources {} => {
            let answer = match (&ntp, &request) {
                (None, _) => {
                    json!({"error": "the NTP service is off (no [ntp] servers or serve in the configuration)"})
                }
                (Some(ntp), Request::Tracking {}) => ntp.tracking().await,
                (Some(ntp), _) => ntp.sources().await,
            };
            write_line(&mut write, &answer.to_string()).await?;
        }
        Request::Events { follow } => {
            let (tx, rx) = oneshot::channel();
            queries.send(Query::Recent(tx)).await?;
            let recent = rx.await?;
            let mut last_seq = 0;
            for record in &recent {
                last_seq = seq_of(record).unwrap_or(last_seq);
                write_line(&mut write, record).await?;
            }
            if !follow {
                return Ok(());
            }
            loop {
                match live.recv().await {
                    Ok(record) => {
                        // Records already sent from the recent list come again live.
                        if seq_of(&record).is_some_and(|s| s <= last_seq) {
                            continue;
                        }
                        write_line(&mut write, &record).await?;
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let note = json!({"lagged": n, "note": "this subscriber fell behind; the journal has every record"});
                        write_line(&mut write, &note.to_string()).await?;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        }
    }
    Ok(())
}

fn seq_of(record: &str) -> Option<u64> {
    #[derive(Deserialize)]
    struct Seq {
        seq: u64,
    }
    serde_json::from_str::<Seq>(record).ok().map(|s| s.seq)
}

pub fn parse_request(line: &str) -> Result<Request, String> {
    if line.len() > MAX_REQUEST {
        return Err(format!("request longer than {MAX_REQUEST} bytes"));
    }
    let line = line.trim();
    if line.is_empty() {
        return Err("empty request".into());
    }
    serde_json::from_str(line).map_err(|e| format!("bad request: {e}"))
}

async fn write_line(write: &mut (impl AsyncWriteExt + Unpin), line: &str) -> Result<()> {
    write.write_all(line.as_bytes()).await?;
    write.write_all(b"\n").await?;
    Ok(())
}

/// Client side: sends one request and calls `each` with every response line.
pub async fn request(
    runtime_dir: &Path,
    request: &Value,
    mut each: impl FnMut(&str) -> Result<()>,
) -> Result<()> {
    let path = socket_path(runtime_dir);
    let stream = UnixStream::connect(&path).await.with_context(|| {
        format!(
            "cannot reach the clockguard daemon at {} (is `clockguard run` running?)",
            path.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    write_line(&mut write, &request.to_string()).await?;
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        if let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(&line) {
            if let Some(err) = obj.get("error").and_then(Value::as_str) {
                bail!("daemon refused the request: {err}");
            }
        }
        each(&line)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_bad_ones_say_why() {
        assert!(matches!(
            parse_request("{\"cmd\":\"status\"}\n"),
            Ok(Request::Status {})
        ));
        assert!(matches!(
            parse_request("{\"cmd\":\"events\",\"follow\":true}"),
            Ok(Request::Events { follow: true })
        ));
        assert!(matches!(
            parse_request("{\"cmd\":\"tracking\"}"),
            Ok(Request::Tracking {})
        ));
        assert!(matches!(
            parse_request("{\"cmd\":\"services\"}"),
            Ok(Request::Services {})
        ));
        assert!(parse_request("{\"cmd\":\"reboot\"}")
            .unwrap_err()
            .contains("reboot"));
        assert!(parse_request("").unwrap_err().contains("empty"));
        assert!(parse_request(&"x".repeat(5000))
            .unwrap_err()
            .contains("longer"));
        assert!(parse_request("{\"cmd\":\"status\",\"x\":1}").is_err());
    }
}
