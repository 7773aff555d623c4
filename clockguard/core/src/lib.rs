//! clockguard's pure core: the decisions, with the types they are made on, and nothing
//! else. No file or socket I/O, no clock reads, no async runtime and no `unsafe` (the
//! compiler holds it to that): everything here is unit-tested in milliseconds. The daemon
//! (the `clockguard` crate) reads the kernel, the files and the network, hands what it
//! read to this crate and carries out what comes back.

#![forbid(unsafe_code)]

pub mod bound;
pub mod clockbound;
pub mod config;
pub mod control_protocol;
pub mod correlation;
pub mod journald;
pub mod lifecycle;
pub mod notify;
pub mod ntp;
pub mod record;
pub mod seal;
pub mod services;
pub mod slew;
pub mod status;
pub mod time;
pub mod timers;
pub mod vmclock;
