//! The control socket's framing: whatever bytes a client sends, the daemon reads at most
//! MAX_REQUEST + 1 of them up to the first newline, and `request_line` then gives a line
//! within the limit, without its newline, or an error message; never a panic. The line
//! goes on to `parse_request` (fuzzed alone by control_request).
#![no_main]

use libfuzzer_sys::fuzz_target;

use clockguard_core::control_protocol::{parse_request, request_line, MAX_REQUEST};

fuzz_target!(|data: &[u8]| {
    // What `take(MAX_REQUEST + 1)` and `read_until(b'\n')` hand over.
    let taken = &data[..data.len().min(MAX_REQUEST + 1)];
    let read = match taken.iter().position(|&b| b == b'\n') {
        Some(newline) => &taken[..=newline],
        None => taken,
    };
    match request_line(read) {
        Ok(line) => {
            assert!(line.len() <= MAX_REQUEST && !line.contains('\n'));
            assert!(read.starts_with(line.as_bytes()));
            if let Err(why) = parse_request(line) {
                assert!(!why.is_empty());
            }
        }
        Err(why) => assert!(!why.is_empty()),
    }
});
