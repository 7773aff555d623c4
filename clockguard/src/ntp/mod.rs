//! NTP (RFC 5905): a client that disciplines the clock by slewing only, and a server.
//! The decisions (the codec, the server's answer, sources, selection, discipline and
//! steering) are sans-IO in `clockguard_core::ntp`; `client` here is the tokio shell
//! around them and `sim` drives them with a simulated clock and network.

pub use clockguard_core::ntp::{packet, server, source};
pub mod client;
mod nts_ke;
#[cfg(test)]
mod sim;
