//! systemd's side of the daemon: sd_notify(3) and the watchdog.

/// systemd's watchdog period, half of WATCHDOG_USEC (as sd_watchdog_enabled(3) advises),
/// when the watchdog is on for this process.
pub(super) fn watchdog_period() -> Option<std::time::Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| std::time::Duration::from_micros(usec / 2))
}

/// sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET, when set.
pub(super) fn notify(message: &str) {
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let addr = if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(name.as_bytes())
    } else {
        SocketAddr::from_pathname(&path)
    };
    if let Ok(addr) = addr {
        let _ = socket.send_to_addr(message.as_bytes(), &addr);
    }
}

/// Is systemd stopping this daemon to start it again (`systemctl restart`, the package's
/// restart after an upgrade)? Then the pinned guard is left in place for the next daemon,
/// which adopts it (same build) or releases it once its own hooks are attached (another
/// build): no moment unguarded. A plain stop ends the guard, as an operator expects.
/// Not started by systemd, or when systemctl cannot say within 5 s: no.
pub(super) async fn restart_pending() -> bool {
    // systemd sets INVOCATION_ID for every process it starts as a unit.
    if std::env::var_os("INVOCATION_ID").is_none() {
        return false;
    }
    let Some(unit) = crate::enrich::read_cgroup(std::path::Path::new("/proc/self"))
        .as_deref()
        .and_then(crate::enrich::unit_of_cgroup)
    else {
        return false;
    };
    let mut systemctl = tokio::process::Command::new("systemctl");
    systemctl
        .args(["list-jobs", "--no-legend", "--no-pager", "--full", &unit])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    // It runs in this unit's cgroup, which systemd is sending SIGTERM to (it did so at
    // once in one test boot out of three, and the guard lapsed over an upgrade).
    clockguard_sys::ignore_sigterm_in_child(&mut systemctl);
    let query = systemctl.output();
    // systemd answers at once, but systemctl itself may be slow to start on a loaded
    // machine (an upgrade's dpkg on one CPU); the unit's TimeoutStopSec is 20 s.
    match tokio::time::timeout(std::time::Duration::from_secs(5), query).await {
        Ok(Ok(out)) if out.status.success() => {
            let jobs = String::from_utf8_lossy(&out.stdout);
            let again = job_starts_again(&jobs, &unit);
            if !again {
                tracing::info!(
                    "stopping {unit}, not restarting (its jobs: {:?})",
                    jobs.trim()
                );
            }
            again
        }
        Ok(Ok(out)) => {
            tracing::warn!(
                "systemctl list-jobs {unit} failed ({}): taken as a stop",
                out.status
            );
            false
        }
        Ok(Err(err)) => {
            tracing::warn!("cannot run systemctl list-jobs {unit}: {err}: taken as a stop");
            false
        }
        Err(_) => {
            tracing::warn!("systemctl list-jobs {unit} did not answer within 5 s: taken as a stop");
            false
        }
    }
}

/// Does `systemctl list-jobs --no-legend` output ("1234 clockguard.service restart
/// running" per line) hold a job for `unit` that starts it again once stopped?
fn job_starts_again(list_jobs: &str, unit: &str) -> bool {
    list_jobs.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        matches!(
            fields.as_slice(),
            [_, u, "restart" | "try-restart", ..] if *u == unit
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_restart_job_of_this_unit_starts_it_again() {
        let unit = "clockguard.service";
        assert!(job_starts_again(
            "  812 clockguard.service restart running\n",
            unit
        ));
        assert!(job_starts_again(
            "813 clockguard.service try-restart running",
            unit
        ));
        assert!(!job_starts_again(
            "814 clockguard.service stop running",
            unit
        ));
        assert!(!job_starts_again(
            "815 chrony.service restart running",
            unit
        ));
        assert!(!job_starts_again("", unit));
    }
}
