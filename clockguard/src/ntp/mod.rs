//! NTP (RFC 5905): a client that disciplines the clock by slewing only, and a server.
//! The decisions (the codec, the server's answer, sources, selection, discipline and
//! steering) are sans-IO in `clockguard_core::ntp`; `client` here is the tokio shell
//! around them and `sim` drives them with a simulated clock and network.

pub use clockguard_core::ntp::{packet, server, source};
pub mod client;
mod nts_ke;
mod serving;
#[cfg(test)]
mod sim;

/// Fills `bytes` from the kernel's random source (getrandom(2)): request cookies, NTS
/// unique identifiers and nonces must be unguessable, so that an off-path attacker cannot
/// forge a reply. (Secret keys are drawn with [`secret_array`], which fails instead.)
pub(crate) fn fill_random(bytes: &mut [u8]) {
    if getrandom::fill(bytes).is_err() {
        // Never expected after boot; fall back to the clock's low bits mixed (an NTS reply
        // still needs the key).
        let t = crate::clock::reading().raw.ns() as u64;
        let mixed = t ^ t.rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15;
        for (i, chunk) in bytes.chunks_mut(8).enumerate() {
            let word = mixed.rotate_left(7 * i as u32);
            chunk.copy_from_slice(&word.to_be_bytes()[..chunk.len()]);
        }
    }
}

/// `LEN` bytes from [`fill_random`].
pub(crate) fn random_array<const LEN: usize>() -> [u8; LEN] {
    let mut bytes = [0u8; LEN];
    fill_random(&mut bytes);
    bytes
}

/// `LEN` secret bytes (a key) from the kernel's random source, or why not.
pub(crate) fn secret_array<const LEN: usize>() -> anyhow::Result<[u8; LEN]> {
    let mut bytes = [0u8; LEN];
    getrandom::fill(&mut bytes)
        .map_err(|err| anyhow::anyhow!("cannot draw a random key: {err}"))?;
    Ok(bytes)
}
