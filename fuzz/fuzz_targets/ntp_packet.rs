//! Every datagram the NTP client and server receive goes through `Packet::parse`: any
//! bytes must give a packet or an error, never a panic; and a packet that parses must
//! serialise to a header that parses back to the same packet.
#![no_main]

use libfuzzer_sys::fuzz_target;

use clockguard_core::ntp::packet;

fuzz_target!(|data: &[u8]| {
    if let Ok(parsed) = packet::Packet::parse(data) {
        let again = packet::Packet::parse(&parsed.to_bytes());
        assert_eq!(again.as_ref(), Ok(&parsed));
        let _ = parsed.kiss_code();
    }
});
