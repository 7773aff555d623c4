//! NTP (RFC 5905): a client that disciplines the clock by slewing only, and a server.
//! `packet`, `server`, `source`, `select`, `discipline` and `engine` are sans-IO (tested
//! with a simulated clock and network); `client` is the tokio shell around them.

pub mod client;
pub mod discipline;
pub mod engine;
pub mod packet;
pub mod select;
pub mod server;
#[cfg(test)]
mod sim;
pub mod source;
