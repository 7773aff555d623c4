//! NTP (RFC 5905), sans-IO: the packet codec, the server's answer, and the client's
//! sources, selection, discipline and steering. The daemon's `ntp::client` owns the
//! sockets, the name look-ups, the timers and the slew engine, and carries out what
//! [`client::ClientCore`] decides; the simulation tests drive the same core with a
//! simulated clock and network.

pub mod client;
pub mod discipline;
pub mod engine;
pub mod nts;
pub mod nts_server;
pub mod packet;
pub mod select;
pub mod server;
pub mod source;
