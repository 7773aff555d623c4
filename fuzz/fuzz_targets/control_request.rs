//! Every line a control-socket client sends goes through `parse_request`: any bytes must
//! give a request or an error message, never a panic, and only `reload` may change the
//! daemon.
#![no_main]

use libfuzzer_sys::fuzz_target;

use clockguard_core::control_protocol;

fuzz_target!(|data: &[u8]| {
    // The daemon reads a line into a String: what is not UTF-8 never gets this far.
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    match control_protocol::parse_request(line) {
        Ok(request) => {
            assert_eq!(request.changes_the_daemon(), request.name() == "reload");
        }
        Err(why) => assert!(!why.is_empty()),
    }
});
