//! The NTP packet: its 48-byte header, written and read by hand (no code shared with
//! clockguard's codec).

use super::*;

/// The 48-byte NTP header (RFC 5905, figure 8); extension fields and MACs are not used.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Packet {
    pub(crate) leap: u8,
    pub(crate) version: u8,
    pub(crate) mode: u8,
    pub(crate) stratum: u8,
    pub(crate) poll: i8,
    pub(crate) precision: i8,
    pub(crate) root_delay: u32,
    pub(crate) root_dispersion: u32,
    pub(crate) refid: [u8; 4],
    pub(crate) reference: u64,
    pub(crate) origin: u64,
    pub(crate) receive: u64,
    pub(crate) transmit: u64,
}

impl Packet {
    pub(crate) fn encode(&self) -> [u8; PACKET_LEN] {
        let mut b = [0u8; PACKET_LEN];
        b[0] = (self.leap & 3) << 6 | (self.version & 7) << 3 | (self.mode & 7);
        b[1] = self.stratum;
        b[2] = self.poll as u8;
        b[3] = self.precision as u8;
        b[4..8].copy_from_slice(&self.root_delay.to_be_bytes());
        b[8..12].copy_from_slice(&self.root_dispersion.to_be_bytes());
        b[12..16].copy_from_slice(&self.refid);
        b[16..24].copy_from_slice(&self.reference.to_be_bytes());
        b[24..32].copy_from_slice(&self.origin.to_be_bytes());
        b[32..40].copy_from_slice(&self.receive.to_be_bytes());
        b[40..48].copy_from_slice(&self.transmit.to_be_bytes());
        b
    }

    /// The header of `b`, or None when it is shorter than 48 bytes.
    pub(crate) fn decode(b: &[u8]) -> Option<Packet> {
        if b.len() < PACKET_LEN {
            return None;
        }
        // Fixed offsets inside the 48 bytes checked above.
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| (u64::from(u32_at(i)) << 32) | u64::from(u32_at(i + 4));
        Some(Packet {
            leap: b[0] >> 6,
            version: (b[0] >> 3) & 7,
            mode: b[0] & 7,
            stratum: b[1],
            poll: b[2] as i8,
            precision: b[3] as i8,
            root_delay: u32_at(4),
            root_dispersion: u32_at(8),
            refid: [b[12], b[13], b[14], b[15]],
            reference: u64_at(16),
            origin: u64_at(24),
            receive: u64_at(32),
            transmit: u64_at(40),
        })
    }
}

/// A refid as text: its ASCII when printable (trailing NULs dropped), else a dotted quad.
pub(crate) fn refid_text(refid: [u8; 4]) -> String {
    let end = refid.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
    let text = &refid[..end];
    if !text.is_empty() && text.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
        String::from_utf8_lossy(text).into_owned()
    } else {
        std::net::Ipv4Addr::from(refid).to_string()
    }
}

pub(crate) fn parse_refid(text: &str) -> Result<[u8; 4], String> {
    if let Ok(ip) = text.parse::<std::net::Ipv4Addr>() {
        return Ok(ip.octets());
    }
    if text.is_empty() || text.len() > 4 || !text.bytes().all(|c| c.is_ascii_graphic()) {
        return Err(format!(
            "--refid {text:?}: 1 to 4 printable ASCII characters or an IPv4 address"
        ));
    }
    let mut refid = [0u8; 4];
    refid[..text.len()].copy_from_slice(text.as_bytes());
    Ok(refid)
}
