//! Every NTS packet either side receives goes through here: the client's `client_reply`
//! (any bytes after the header give cookies or an error: not ours, unauthenticated,
//! malformed) and the server's `read_request` and `answer` (a plain request, an
//! authentic one, a NAK or nothing). Never a panic or an out-of-bounds read, and forged
//! bytes never pass an authenticator. (That an authentic request's reply is never longer
//! than the request is the unit test `no_reply_is_longer_than_its_request`: the fuzzer
//! cannot make requests that authenticate.)
#![no_main]

use libfuzzer_sys::fuzz_target;

use clockguard_core::ntp::{
    nts,
    nts_server::{self, ServerKeys},
    packet::{Leap, NtpTimestamp},
    server::{self, RateLimiter, ServerClock},
};
use clockguard_core::time::Monotonic;

fuzz_target!(|data: &[u8]| {
    let key = [2u8; nts::KEY_LEN];
    if let Ok(fields) = nts::extensions(data) {
        let _ = nts::open_authenticator(data, &fields, &key);
    }
    let _ = nts::client_reply(data, &[4u8; 32], &key);

    let keys = ServerKeys::new(1, [9u8; nts::KEY_LEN]);
    if let nts_server::NtsRequest::Authentic { .. } = nts_server::read_request(data, &keys) {
        panic!("a request no client keys made authenticated");
    }
    let clock = ServerClock {
        leap: Leap::None,
        stratum: 2,
        precision: -20,
        reference_id: [127, 0, 0, 1],
        reference_ts: NtpTimestamp(1),
        root_delay_s: 0.0,
        root_dispersion_s: 0.0,
    };
    let (_, reply) = server::answer(
        data,
        std::net::Ipv4Addr::LOCALHOST.into(),
        NtpTimestamp(2),
        Monotonic::from_ns(0),
        &clock,
        &mut RateLimiter::new(3, 8, 1),
        Some(&keys),
        &mut |bytes| bytes.fill(7),
        &mut || NtpTimestamp(3),
    );
    if let Some(reply) = reply {
        assert!(reply.len() <= data.len(), "a NAK or plain reply longer than its request");
    }
});
