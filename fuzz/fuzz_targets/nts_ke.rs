//! The NTS-KE client reads the server's records off a TLS stream: any bytes must give
//! records, "incomplete" or an error, never a panic; a message that parses must encode
//! back to the same records, and the client's verdict on it must be an outcome or an
//! error.
#![no_main]

use libfuzzer_sys::fuzz_target;

use clockguard_core::ntp::nts;

fuzz_target!(|data: &[u8]| {
    if let Ok(records) = nts::parse_message(data) {
        let again = nts::parse_message(&nts::encode_records(&records));
        assert_eq!(again.as_ref(), Ok(&records));
        let _ = nts::client_outcome(&records);
    }
});
