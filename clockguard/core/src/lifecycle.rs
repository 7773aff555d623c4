//! How the previous daemon ended, for the start record: a clean stop (its last record is
//! its `stop`), or killed, when its heartbeat file says how long at most no daemon ran and
//! how many kernel events were lost meanwhile.

use serde::{Deserialize, Serialize};

use crate::time::Realtime;

/// What a running daemon writes to its runtime directory every few seconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub pid: u32,
    /// When it was written.
    #[serde(rename = "realtime_ns")]
    pub written: Realtime,
    /// The kernel's count of events lost to a full ring buffer then.
    pub ring_buffer_drops: u64,
}

/// How the previous run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum PreviousStop {
    /// The journal holds no record of an earlier run.
    FirstStart,
    /// Its last record is its `stop`.
    Clean,
    /// Killed (or crashed): no `stop`, and its heartbeat tells when it was last alive.
    Unclean {
        pid: u32,
        /// Its last heartbeat.
        last_alive: Realtime,
        /// From then until now: the heartbeat is written every few seconds, so no daemon
        /// ran for at most this long.
        down_at_most_s: f64,
        /// Kernel events lost to a full ring buffer since its last heartbeat (None
        /// without eBPF; the counter lives in the pinned maps, so it spans the gap).
        ring_buffer_drops_while_down: Option<u64>,
    },
    /// Not clean, but there is no heartbeat: killed in an earlier boot (the runtime
    /// directory is gone), or by a version without the heartbeat.
    Unknown,
}

impl PreviousStop {
    /// The journal's word for it (`detail.previous_stop` of the start record).
    pub fn as_str(&self) -> &'static str {
        match self {
            PreviousStop::FirstStart => "first start",
            PreviousStop::Clean => "clean",
            PreviousStop::Unclean { .. } => "unclean",
            PreviousStop::Unknown => "unknown",
        }
    }
}

/// `ended_cleanly`: whether the journal's last record is the previous daemon's `stop`
/// (None: the journal is empty). `now` and `drops_now` are read at this start.
pub fn previous_stop(
    ended_cleanly: Option<bool>,
    heartbeat: Option<&Heartbeat>,
    now: Realtime,
    drops_now: Option<u64>,
) -> PreviousStop {
    match (ended_cleanly, heartbeat) {
        (None, _) => PreviousStop::FirstStart,
        (Some(true), _) => PreviousStop::Clean,
        (Some(false), Some(heartbeat)) => PreviousStop::Unclean {
            pid: heartbeat.pid,
            last_alive: heartbeat.written,
            down_at_most_s: now.ns_since(heartbeat.written) as f64 / 1e9,
            ring_buffer_drops_while_down: drops_now
                .map(|now| now.saturating_sub(heartbeat.ring_buffer_drops)),
        },
        (Some(false), None) => PreviousStop::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Realtime = Realtime::from_ns(1_796_000_000_000_000_000);

    fn heartbeat(seconds_ago: i64, drops: u64) -> Heartbeat {
        Heartbeat {
            pid: 901,
            written: NOW.plus_ns(-seconds_ago * 1_000_000_000),
            ring_buffer_drops: drops,
        }
    }

    #[test]
    fn an_empty_journal_is_a_first_start_and_a_stop_record_a_clean_one() {
        let hb = heartbeat(7, 0);
        assert_eq!(
            previous_stop(None, Some(&hb), NOW, Some(0)),
            PreviousStop::FirstStart
        );
        // A clean stop leaves its heartbeat too: the stop record decides.
        assert_eq!(
            previous_stop(Some(true), Some(&hb), NOW, Some(0)),
            PreviousStop::Clean
        );
        assert_eq!(previous_stop(Some(true), None, NOW, None).as_str(), "clean");
    }

    #[test]
    fn a_killed_daemon_is_reported_with_its_gap_and_the_events_lost_in_it() {
        let found = previous_stop(Some(false), Some(&heartbeat(7, 10)), NOW, Some(25));
        assert_eq!(
            found,
            PreviousStop::Unclean {
                pid: 901,
                last_alive: NOW.plus_ns(-7_000_000_000),
                down_at_most_s: 7.0,
                ring_buffer_drops_while_down: Some(15),
            }
        );
        assert_eq!(found.as_str(), "unclean");
        // Without eBPF there is no counter; a counter that went back (new maps) is 0 lost,
        // not a wrapped huge number.
        let PreviousStop::Unclean {
            ring_buffer_drops_while_down,
            ..
        } = previous_stop(Some(false), Some(&heartbeat(1, 10)), NOW, None)
        else {
            panic!("unclean expected");
        };
        assert_eq!(ring_buffer_drops_while_down, None);
        let PreviousStop::Unclean {
            ring_buffer_drops_while_down,
            ..
        } = previous_stop(Some(false), Some(&heartbeat(1, 10)), NOW, Some(3))
        else {
            panic!("unclean expected");
        };
        assert_eq!(ring_buffer_drops_while_down, Some(0));
    }

    #[test]
    fn no_stop_and_no_heartbeat_is_unknown() {
        assert_eq!(
            previous_stop(Some(false), None, NOW, Some(0)),
            PreviousStop::Unknown
        );
        assert_eq!(PreviousStop::Unknown.as_str(), "unknown");
        assert_eq!(PreviousStop::FirstStart.as_str(), "first start");
    }

    #[test]
    fn the_heartbeat_file_format_is_kept() {
        let hb = Heartbeat {
            pid: 1,
            written: Realtime::from_ns(2),
            ring_buffer_drops: 3,
        };
        let text = serde_json::to_string(&hb).unwrap();
        assert_eq!(text, r#"{"pid":1,"realtime_ns":2,"ring_buffer_drops":3}"#);
        assert_eq!(serde_json::from_str::<Heartbeat>(&text).unwrap(), hb);
    }
}
