//! The control socket (runtime_dir/control.sock, 0600): newline-delimited JSON.
//!
//! Requests: `{"cmd":"status"}` → one status object; `{"cmd":"events","follow":bool}` →
//! the recent records, one per line, then (follow) every new record as it is journaled;
//! `{"cmd":"tracking"}` and `{"cmd":"sources"}` → the NTP service's state (chronyc's);
//! `{"cmd":"services"}` → the tracked services only (what `service-check` polls, as a
//! keepalived track_script, every second: no /proc or DMI reads of a full status).
//! `{"cmd":"reload"}` → the daemon reads its configuration again (as on SIGHUP) and says
//! what it applied; the only request that changes anything, so root only.
//! A bad request gets `{"error": "..."}` and the connection is closed.
//!
//! Who may ask: the socket is 0600 root, or 0660 root:`[control] read_group`. Besides the
//! file mode, each connection's peer credentials (SO_PEERCRED, SO_PEERGROUPS) are checked
//! against the same rule, so a socket made world-writable by hand (or reached through a
//! descriptor passed on) still changes nothing for anyone but root.
//!
//! What a peer can hold: [`Limits`]. Root's connections and everyone else's have separate
//! budgets, and a connection over its budget is answered "too many connections" and
//! closed at once, so an allowed user who opens thousands neither exhausts the daemon's
//! descriptors nor queues in front of root; a peer that sends no request line within the
//! request timeout is closed.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use clockguard_core::status::{ServicesAnswer, Status};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{unix::UCred, UnixListener, UnixStream},
    sync::{broadcast, mpsc, oneshot, Semaphore},
};

use crate::{
    control_protocol::{parse_request, request_line, Request, MAX_REQUEST},
    ntp::client::NtpHandle,
};

pub const SOCKET_NAME: &str = "control.sock";

/// How many connections the socket serves at once, and how long a peer has to send its
/// request line.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections of peers that may only read, and of refused ones (answered, then
    /// closed): `events --follow` subscribers count here.
    pub readers: usize,
    /// Root's (and the daemon user's) own.
    pub admins: usize,
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            readers: 64,
            admins: 64,
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// Says a busy socket no more often than this.
const BUSY_LOG_INTERVAL: Duration = Duration::from_secs(10);

pub fn socket_path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join(SOCKET_NAME)
}

/// Who may use the socket: root (and the daemon's own user) for everything, members of
/// the read group for the read-only requests.
#[derive(Clone, Copy, Debug)]
pub struct Access {
    pub admin_uid: u32,
    pub read_gid: Option<u32>,
}

/// What a peer may do.
#[derive(Debug, PartialEq)]
pub enum Peer {
    Admin,
    Reader,
    Refused(String),
}

impl Access {
    /// Judges a peer by its credentials: uid, primary gid, supplementary groups.
    pub fn judge(&self, uid: u32, gid: u32, groups: &[u32]) -> Peer {
        if uid == 0 || uid == self.admin_uid {
            return Peer::Admin;
        }
        match self.read_gid {
            Some(read) if gid == read || groups.contains(&read) => Peer::Reader,
            Some(read) => Peer::Refused(format!(
                "permission denied: uid {uid} is not root and not in the read group (gid {read})"
            )),
            None => Peer::Refused(format!(
                "permission denied: uid {uid} is not root (no [control] read_group is configured)"
            )),
        }
    }
}

/// `[control] read_group`: a group name or a numeric gid.
pub fn resolve_group(group: &str) -> Result<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    match clockguard_sys::group_id(group) {
        Ok(Some(gid)) => Ok(gid),
        Ok(None) => bail!("control.read_group = {group:?}: no such group"),
        Err(err) => bail!("control.read_group = {group:?}: cannot look it up: {err}"),
    }
}

/// Why `now` has no answer.
const NO_BOUND: &str = "no clock error bound is kept: it needs the NTP client ([ntp] servers \
                        or pools) and [bound] enabled = true";

/// What a connection asks of the daemon's main loop.
pub enum Query {
    Status(oneshot::Sender<Box<Status>>),
    /// The tracked services' part of the status.
    Services(oneshot::Sender<ServicesAnswer>),
    /// The recent records (JSON lines), oldest first.
    Recent(oneshot::Sender<Vec<Arc<str>>>),
    /// The clock error bound now (None: not kept).
    Now(oneshot::Sender<Option<clockguard_core::bound::Answer>>),
    /// Read the configuration again, for this peer.
    Reload {
        peer: Option<UCred>,
        reply: oneshot::Sender<Value>,
    },
}

/// A typed answer as its JSON line. Through a `Value`, whose map sorts the keys at every
/// level, as the answers had them before they were typed (golden/*.json).
fn answer_line(answer: &impl serde::Serialize) -> Result<String> {
    Ok(serde_json::to_value(answer)?.to_string())
}

/// Binds the socket, refusing to take over one that a running daemon still answers on;
/// 0600, or 0660 with the read group as its group.
pub async fn bind(runtime_dir: &Path, read_gid: Option<u32>) -> Result<UnixListener> {
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
    let mode = match read_gid {
        Some(gid) => {
            std::os::unix::fs::chown(&path, None, Some(gid))
                .with_context(|| format!("cannot give {} to gid {gid}", path.display()))?;
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

pub async fn serve(
    listener: UnixListener,
    access: Access,
    limits: Limits,
    queries: mpsc::Sender<Query>,
    live: broadcast::Sender<Arc<str>>,
    ntp: Option<NtpHandle>,
) {
    let readers = Arc::new(Semaphore::new(limits.readers));
    let admins = Arc::new(Semaphore::new(limits.admins));
    let mut busy_since_log = 0u64;
    let mut busy_logged: Option<std::time::Instant> = None;
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
        let (peer, cred) = match stream.peer_cred() {
            Ok(cred) => (
                access.judge(
                    cred.uid(),
                    cred.gid(),
                    &clockguard_sys::peer_groups(&stream),
                ),
                Some(cred),
            ),
            Err(err) => (
                Peer::Refused(format!("the peer's credentials are unknown ({err})")),
                None,
            ),
        };
        let budget = if peer == Peer::Admin {
            &admins
        } else {
            &readers
        };
        let Ok(permit) = budget.clone().try_acquire_owned() else {
            // Never waits for the peer: a full socket buffer only loses the courtesy.
            let _ = stream.try_write(TOO_MANY.as_bytes());
            busy_since_log += 1;
            if busy_logged.is_none_or(|at| at.elapsed() >= BUSY_LOG_INTERVAL) {
                tracing::warn!(
                    "control socket: {busy_since_log} connection(s) refused as too many (the \
                     last from {}); at most {} of root's and {} of others at once",
                    describe(cred),
                    limits.admins,
                    limits.readers
                );
                busy_logged = Some(std::time::Instant::now());
                busy_since_log = 0;
            }
            continue;
        };
        let queries = queries.clone();
        let live = live.subscribe();
        let ntp = ntp.clone();
        let timeout = limits.request_timeout;
        tokio::spawn(async move {
            // Held until the connection ends.
            let _permit = permit;
            if let Err(err) = handle(stream, peer, cred, timeout, queries, live, ntp).await {
                tracing::debug!("control connection: {err:#}");
            }
        });
    }
}

/// The answer to a connection over its budget.
const TOO_MANY: &str =
    "{\"error\":\"too many connections to the control socket: try again later\"}\n";

async fn handle(
    stream: UnixStream,
    peer: Peer,
    cred: Option<UCred>,
    request_timeout: Duration,
    queries: mpsc::Sender<Query>,
    mut live: broadcast::Receiver<Arc<str>>,
    ntp: Option<NtpHandle>,
) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(MAX_REQUEST as u64 + 1));
    let mut raw = Vec::new();
    // Read before any refusal: a peer whose request is not read yet could see its own write
    // fail (EPIPE) instead of the answer.
    match tokio::time::timeout(request_timeout, reader.read_until(b'\n', &mut raw)).await {
        Ok(read) => {
            read?;
        }
        Err(_) => {
            let message = format!(
                "no request within {} s: the connection is closed",
                request_timeout.as_secs_f64()
            );
            write_line(&mut write, &json!({ "error": message }).to_string()).await?;
            return Ok(());
        }
    }
    if let Peer::Refused(why) = &peer {
        return refuse(&mut write, cred, why).await;
    }
    let request = match request_line(&raw).and_then(parse_request) {
        Ok(r) => r,
        Err(message) => {
            write_line(&mut write, &json!({ "error": message }).to_string()).await?;
            return Ok(());
        }
    };
    if request.changes_the_daemon() && peer != Peer::Admin {
        let why = format!(
            "permission denied: `{}` changes the daemon and needs root; this user may only \
             read",
            request.name()
        );
        return refuse(&mut write, cred, &why).await;
    }
    match request {
        Request::Reload {} => {
            let (reply, answer) = oneshot::channel();
            queries.send(Query::Reload { peer: cred, reply }).await?;
            write_line(&mut write, &answer.await?.to_string()).await?;
        }
        Request::Status {} => {
            let (tx, rx) = oneshot::channel();
            queries.send(Query::Status(tx)).await?;
            write_line(&mut write, &answer_line(&rx.await?)?).await?;
        }
        Request::Services {} => {
            let (tx, rx) = oneshot::channel();
            queries.send(Query::Services(tx)).await?;
            write_line(&mut write, &answer_line(&rx.await?)?).await?;
        }
        Request::Now {} => {
            let (tx, rx) = oneshot::channel();
            queries.send(Query::Now(tx)).await?;
            let answer = match rx.await? {
                Some(answer) => serde_json::to_value(answer)?,
                None => json!({ "error": NO_BOUND }),
            };
            write_line(&mut write, &answer_line(&answer)?).await?;
        }
        Request::Tracking {} | Request::Sources {} => {
            let answer = match (&ntp, &request) {
                (None, _) => json!({
                    "error": "the NTP service is off (no [ntp] servers or serve in the configuration)"
                }),
                (Some(ntp), Request::Tracking {}) => match ntp.tracking().await {
                    Ok(tracking) => serde_json::to_value(tracking)?,
                    Err(stopped) => json!({ "error": stopped.to_string() }),
                },
                (Some(ntp), _) => match ntp.sources().await {
                    Ok(sources) => serde_json::to_value(sources)?,
                    Err(stopped) => json!({ "error": stopped.to_string() }),
                },
            };
            write_line(&mut write, &answer_line(&answer)?).await?;
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

/// Logs a refused peer and gives it the reason as its answer.
async fn refuse(
    write: &mut (impl AsyncWriteExt + Unpin),
    cred: Option<UCred>,
    why: &str,
) -> Result<()> {
    tracing::warn!("control socket: refused {}: {why}", describe(cred));
    write_line(write, &json!({ "error": why }).to_string()).await
}

/// "pid 123 (uid 1000)", for the log.
fn describe(cred: Option<UCred>) -> String {
    match cred {
        Some(cred) => format!(
            "pid {} (uid {})",
            cred.pid().map_or("?".into(), |p| p.to_string()),
            cred.uid()
        ),
        None => "a peer of unknown credentials".into(),
    }
}

fn seq_of(record: &str) -> Option<u64> {
    #[derive(Deserialize)]
    struct Seq {
        seq: u64,
    }
    serde_json::from_str::<Seq>(record).ok().map(|s| s.seq)
}

async fn write_line(write: &mut (impl AsyncWriteExt + Unpin), line: &str) -> Result<()> {
    write.write_all(line.as_bytes()).await?;
    write.write_all(b"\n").await?;
    Ok(())
}

/// How long the client waits for each line of an answer (not for `events --follow`, which
/// may rightly stay silent for hours): a hung daemon gets an error, not a hung CLI.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Client side: sends one request and calls `each` with every response line.
pub async fn request(
    runtime_dir: &Path,
    request: &Value,
    each: impl FnMut(&str) -> Result<()>,
) -> Result<()> {
    request_within(runtime_dir, request, ANSWER_TIMEOUT, each).await
}

/// `request`, waiting at most `answer_timeout` for each line unless the request follows.
async fn request_within(
    runtime_dir: &Path,
    request: &Value,
    answer_timeout: Duration,
    mut each: impl FnMut(&str) -> Result<()>,
) -> Result<()> {
    let path = socket_path(runtime_dir);
    let stream = match UnixStream::connect(&path).await {
        Ok(stream) => stream,
        Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => bail!(
            "permission denied on {}: the control socket is root's (and the group's of \
             [control] read_group, when set)",
            path.display()
        ),
        Err(err) => bail!(
            "cannot reach the clockguard daemon at {} (is `clockguard run` running?): {err}",
            path.display()
        ),
    };
    let (read, mut write) = stream.into_split();
    if let Err(err) = write_line(&mut write, &request.to_string()).await {
        // The daemon may have answered (a refusal) and closed already: read that first.
        if err
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind)
            != Some(std::io::ErrorKind::BrokenPipe)
        {
            return Err(err);
        }
    }
    let follow = request["follow"] == json!(true);
    let mut lines = BufReader::new(read).lines();
    loop {
        let next = if follow {
            lines.next_line().await?
        } else {
            match tokio::time::timeout(answer_timeout, lines.next_line()).await {
                Ok(next) => next?,
                Err(_) => bail!(
                    "the clockguard daemon at {} took the request but gave no answer within \
                     {} s: is it hung? (its heartbeat is {})",
                    path.display(),
                    answer_timeout.as_secs_f64(),
                    runtime_dir.join("heartbeat.json").display()
                ),
            }
        };
        let Some(line) = next else { break };
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

    /// A daemon that takes the connection and never answers: the client gives up with an
    /// error that says so, instead of hanging.
    #[tokio::test]
    async fn a_silent_daemon_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(socket_path(dir.path())).unwrap();
        let silent = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(stream);
        });
        let started = std::time::Instant::now();
        let err = request_within(
            dir.path(),
            &json!({"cmd": "status"}),
            Duration::from_millis(200),
            |_| Ok(()),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("gave no answer within 0.2 s"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        silent.abort();
    }

    /// Reads one line from a connection (None once the daemon closed it without one).
    async fn answer_of(stream: &mut UnixStream) -> Option<String> {
        let mut line = String::new();
        let mut reader = BufReader::new(stream);
        tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line))
            .await
            .expect("the daemon answers or closes within 5 s")
            .ok()?;
        (!line.is_empty()).then_some(line)
    }

    /// Connections over the budget are told so and closed at once; one that sends
    /// nothing is closed after the request timeout, and its place is served again.
    #[tokio::test]
    async fn connections_over_the_budget_and_silent_ones_are_closed() {
        let dir = tempfile::tempdir().unwrap();
        let listener = bind(dir.path(), None).await.unwrap();
        // This process's own uid is the admin: every connection of the test is root's.
        let access = Access {
            admin_uid: clockguard_sys::effective_uid(),
            read_gid: None,
        };
        let limits = Limits {
            readers: 2,
            admins: 2,
            request_timeout: Duration::from_millis(300),
        };
        let (queries, _keep) = mpsc::channel(4);
        let (live, _) = broadcast::channel(4);
        let server = tokio::spawn(serve(listener, access, limits, queries, live, None));
        let path = socket_path(dir.path());
        let mut idle = Vec::new();
        for _ in 0..2 {
            idle.push(UnixStream::connect(&path).await.unwrap());
        }
        // Let the server take both before the third comes.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut third = UnixStream::connect(&path).await.unwrap();
        let refused = answer_of(&mut third).await.unwrap();
        assert!(refused.contains("too many connections"), "{refused}");
        // The silent ones are closed after the timeout, with the reason.
        for stream in &mut idle {
            let said = answer_of(stream).await.unwrap();
            assert!(said.contains("no request within 0.3 s"), "{said}");
        }
        // And the budget is free again: a request is read and answered.
        let mut next = UnixStream::connect(&path).await.unwrap();
        next.write_all(b"{\"cmd\":\"no-such-command\"}\n")
            .await
            .unwrap();
        let answer = answer_of(&mut next).await.unwrap();
        assert!(
            answer.contains("error") && !answer.contains("too many"),
            "{answer}"
        );
        server.abort();
    }

    #[test]
    fn peers_are_judged_by_uid_and_groups() {
        let root_only = Access {
            admin_uid: 0,
            read_gid: None,
        };
        assert_eq!(root_only.judge(0, 0, &[]), Peer::Admin);
        assert!(
            matches!(root_only.judge(1000, 1000, &[]), Peer::Refused(why) if why.contains("uid 1000 is not root"))
        );
        let with_group = Access {
            admin_uid: 0,
            read_gid: Some(4),
        };
        assert_eq!(with_group.judge(1000, 4, &[]), Peer::Reader);
        assert_eq!(with_group.judge(1000, 1000, &[27, 4]), Peer::Reader);
        assert!(
            matches!(with_group.judge(1000, 1000, &[27]), Peer::Refused(why) if why.contains("gid 4"))
        );
        // A daemon run by an unprivileged user (tests, capabilities) administers itself.
        let as_user = Access {
            admin_uid: 1000,
            read_gid: None,
        };
        assert_eq!(as_user.judge(1000, 1000, &[]), Peer::Admin);
        assert!(matches!(as_user.judge(1001, 1000, &[]), Peer::Refused(_)));
    }

    #[test]
    fn groups_resolve_by_name_or_number() {
        assert_eq!(resolve_group("root").unwrap(), 0);
        assert_eq!(resolve_group("4242").unwrap(), 4242);
        let err = resolve_group("no-such-group-cg").unwrap_err().to_string();
        assert!(err.contains("no such group"), "{err}");
    }
}
