//! NTP (RFC 5905): a client that disciplines the clock by slewing only, and a server.
//! `packet` (the codec, in clockguard-core), `server`, `source`, `select`, `discipline` and
//! `engine` are sans-IO (tested with a simulated clock and network); `client` is the tokio
//! shell around them.

pub mod client;
pub mod discipline;
pub mod engine;
pub use clockguard_core::ntp_packet as packet;
pub mod select;
pub mod server;
#[cfg(test)]
mod sim;
pub mod source;
