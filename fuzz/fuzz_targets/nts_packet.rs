//! Every NTS reply the client receives goes through `client_reply`: any bytes after the
//! header must give cookies or an error (not ours, unauthenticated, malformed), never a
//! panic or an out-of-bounds read; forged bytes never pass the authenticator.
#![no_main]

use libfuzzer_sys::fuzz_target;

use clockguard_core::ntp::nts;

fuzz_target!(|data: &[u8]| {
    let key = [2u8; nts::KEY_LEN];
    if let Ok(fields) = nts::extensions(data) {
        let _ = nts::open_authenticator(data, &fields, &key);
    }
    let _ = nts::client_reply(data, &[4u8; 32], &key);
});
