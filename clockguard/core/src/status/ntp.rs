//! The NTP client and server: the `tracking` and `sources` answers.

use serde::{Deserialize, Serialize};

use super::*;

/// The NTP client's `tracking` answer (like `chronyc tracking`). Offsets are the system
/// clock (CLOCK_REALTIME) − NTP time, s: positive when the clock is ahead.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tracking {
    /// A source is selected and the selection is sound.
    pub synchronized: bool,
    pub unsynchronized_reason: Option<String>,
    /// The clock is slewed towards NTP time (guard mode); else only measured.
    pub disciplining: bool,
    /// The selected source: its name and address, and its reference ID ("7F000001").
    pub reference: Option<String>,
    pub reference_address: Option<String>,
    pub reference_id: Option<String>,
    pub stratum: Option<u8>,
    /// The last clock update (RFC 3339, CLOCK_REALTIME).
    pub ref_time: Option<String>,
    pub offset_s: Option<f64>,
    pub last_offset_s: Option<f64>,
    pub rms_offset_s: Option<f64>,
    /// The frequency correction applied to the kernel clock, and the one estimated, ppm.
    pub frequency_ppm: Option<f64>,
    pub estimated_frequency_ppm: Option<f64>,
    pub residual_freq_ppm: Option<f64>,
    pub skew_ppm: Option<f64>,
    pub root_delay_s: Option<f64>,
    pub root_dispersion_s: Option<f64>,
    pub update_interval_s: Option<f64>,
    /// "normal", "insert second", "delete second" or "not synchronised".
    pub leap_status: String,
    pub leap_seconds: Vec<LeapSecond>,
    pub corrections: u64,
    pub corrections_refused: u64,
    pub last_convergence: Option<Convergence>,
    /// The latest convergences, oldest first.
    pub convergences: Vec<Convergence>,
    /// The offset when a correction of 1 ms or more began, while it lasts, s.
    pub converging_from_offset_s: Option<f64>,
    pub slew: Option<SlewStatus>,
    /// The NTP server, when serving.
    pub server: Option<ServerStatus>,
}

/// A leap second announced by the sources.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeapSecond {
    /// +1: inserted (23:59:60), −1: deleted (23:59:59 skipped).
    pub delta_s: i64,
    /// The midnight UTC it comes before, Unix s.
    pub at_unix_s: i64,
    /// The leap is behind: UTC is the timescale less it.
    pub passed: bool,
    /// The sources that announced it (indices).
    pub sources: Vec<usize>,
}

/// How long the clock took to come within 1 ms of NTP time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Convergence {
    /// System clock − NTP time when the correction started, s.
    pub from_offset_s: f64,
    /// Time taken, s (CLOCK_MONOTONIC_RAW: the slewed clocks run up to 10 % fast).
    pub took_s: f64,
    /// When it came within (RFC 3339, CLOCK_REALTIME).
    pub ended: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    /// The address bound (the configured port 0 becomes the one the kernel chose).
    pub listen: String,
    /// The NTS-KE server's address, when NTS is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nts_ke: Option<String>,
    pub counters: ServerCounters,
}

/// What the NTP server did with the datagrams it received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerCounters {
    pub answered: u64,
    pub kiss_rate: u64,
    pub malformed: u64,
    pub not_a_request: u64,
    pub rate_limited: u64,
    pub send_errors: u64,
    /// NTS requests answered with an authenticator and fresh cookies, and those answered
    /// with an NTS NAK (a cookie not ours, e.g. from before a restart, or a request that
    /// did not authenticate).
    #[serde(default)]
    pub nts_answered: u64,
    #[serde(default)]
    pub nts_naks: u64,
    /// NTS-KE exchanges served (cookies given), and those that failed (TLS, a bad request,
    /// a timeout).
    #[serde(default)]
    pub nts_key_exchanges: u64,
    #[serde(default)]
    pub nts_key_exchange_errors: u64,
}

/// The NTP client's `sources` answer (like `chronyc sources`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourcesAnswer {
    pub sources: Vec<SourceReport>,
    /// Configured names that did not resolve (yet).
    pub unresolved: Vec<String>,
    /// The NTS servers: key exchange and authentication.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nts: Vec<NtsReport>,
}

/// One NTS server (`nts_servers`): its key exchange (NTS-KE over TLS 1.3) and what its
/// replies came to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NtsReport {
    /// As configured: the NTS-KE server.
    pub name: String,
    /// The NTP server the last key exchange named (ADDRESS:PORT); None before one worked.
    pub address: Option<String>,
    /// Cookies left (each request spends one; each authentic reply brings some back).
    pub cookies: usize,
    pub key_exchanges: u64,
    pub key_exchange_errors: u64,
    /// Why the last key exchange failed, while no later one has worked.
    pub last_error: Option<String>,
    /// Replies whose authenticator verified (the only ones the clock is measured with).
    pub authenticated: u64,
    /// Replies dropped: forged, answering another request, or malformed.
    pub rejected: u64,
    /// NTS negative acknowledgements (kiss NTSN): the server no longer reads our cookies.
    pub naks: u64,
}

/// One NTP source. Offsets are the source's time − the system clock, s.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceReport {
    pub name: String,
    pub address: String,
    pub state: SourceState,
    pub stratum: Option<u8>,
    pub reference_id: Option<String>,
    /// log2 of the poll interval, s.
    pub poll: i8,
    /// The reach register in octal ("377": the last 8 polls answered).
    pub reach: String,
    /// Since the last valid reply, s.
    pub last_rx_s: Option<f64>,
    pub offset_s: Option<f64>,
    pub error_s: Option<f64>,
    pub frequency_ppm: Option<f64>,
    pub skew_ppm: Option<f64>,
    pub last_delay_s: Option<f64>,
    /// Samples in the source's fit.
    pub samples: u64,
    /// The kiss code (DENY, RSTR) that stopped polling it.
    pub kiss_denied: Option<String>,
    pub counters: SourceCounters,
}

impl SourceReport {
    /// Whether any of the last 8 polls was answered.
    pub fn reachable(&self) -> bool {
        !self.reach.trim_matches('0').is_empty()
    }
}

/// A source's part in the selection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceState {
    /// The one the clock follows.
    Selected,
    /// Agrees with the selected one and is combined with it.
    Combined,
    /// Disagrees with the majority.
    Falseticker,
    /// Its server says it is unsynchronised (leap 3 or stratum 16).
    Unsynchronised,
    /// Too few samples yet.
    Collecting,
    #[serde(rename = "not selectable")]
    NotSelectable,
    /// Not polled yet / no answer in the last 8 polls / a DENY or RSTR kiss.
    New,
    Unreachable,
    Denied,
}

impl SourceState {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceState::Selected => "selected",
            SourceState::Combined => "combined",
            SourceState::Falseticker => "falseticker",
            SourceState::Unsynchronised => "unsynchronised",
            SourceState::Collecting => "collecting",
            SourceState::NotSelectable => "not selectable",
            SourceState::New => "new",
            SourceState::Unreachable => "unreachable",
            SourceState::Denied => "denied",
        }
    }
}

/// What a source's replies came to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCounters {
    pub sent: u64,
    pub received: u64,
    pub accepted: u64,
    pub malformed: u64,
    pub not_a_reply: u64,
    pub bad_origin: u64,
    pub duplicate: u64,
    pub kiss: u64,
    pub unsynchronised: u64,
    pub bogus: u64,
    pub outliers: u64,
    pub resets: u64,
}
