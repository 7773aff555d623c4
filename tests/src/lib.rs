//! What the test programs share.

#![forbid(unsafe_code)]

/// A clock's value in ns (clock_gettime).
pub use clockguard_sys::clock_ns as read_ns;

#[cfg(test)]
mod clockbound_reader;
pub mod witness;
