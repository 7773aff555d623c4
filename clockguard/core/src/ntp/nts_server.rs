//! Network Time Security (RFC 8915), the server's side, sans-IO: the answer to an NTS-KE
//! request, the cookies (the session keys sealed under a server key that rotates), and
//! what an NTP request's NTS fields come to. The daemon owns the TLS connection, the
//! randomness, the rotation's timer and the socket; the records and extension fields are
//! those of [`super::nts`].
//!
//! A cookie, as this server makes it (chrony's and ntpd-rs's are alike in spirit; a
//! cookie is opaque to its client and only read back by the server that made it):
//! ```text
//! | key id (32 bits) | nonce (16 bytes) | AES-SIV(server key; c2s ‖ s2c) (64 + 16 bytes) |
//! ```
//! The key id is the associated data, so a cookie cannot be moved to another key.

use std::collections::VecDeque;

use aes_siv::{
    aead::{Aead, KeyInit, Payload},
    Aes128SivAead, Nonce,
};

use super::nts::{
    self, KeRecord, AEAD_AES_SIV_CMAC_256, COOKIES_WANTED, EF_AUTHENTICATOR, EF_COOKIE,
    EF_COOKIE_PLACEHOLDER, EF_UNIQUE_IDENTIFIER, KEY_LEN, NONCE_LEN, PROTOCOL_NTPV4,
};
use super::packet::HEADER_LEN;

/// Server keys kept: the current one and the two before it, so a cookie stays readable for
/// two rotation periods after the key it was sealed with was replaced (chrony keeps as
/// many).
pub const SERVER_KEYS_KEPT: usize = 3;
/// The cookie's length (bytes): key id, nonce, the two session keys and the SIV tag.
pub const COOKIE_LEN: usize = 4 + NONCE_LEN + 2 * KEY_LEN + 16;
/// The shortest unique identifier a request may carry (bytes; RFC 8915 §5.3).
pub const MIN_UNIQUE_ID_LEN: usize = 32;

/// The two keys of one NTS session (the TLS exporter's, at the key exchange): the client
/// authenticates its requests with `c2s`, the server its replies with `s2c`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SessionKeys {
    pub c2s: [u8; KEY_LEN],
    pub s2c: [u8; KEY_LEN],
}

/// Never the keys themselves, should a session be logged.
impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys { .. }")
    }
}

/// The server keys that seal cookies, newest first. Rotation (by the daemon's timer)
/// adds a new one and forgets the oldest: a stolen key then opens old cookies only.
pub struct ServerKeys {
    keys: VecDeque<(u32, [u8; KEY_LEN])>,
}

impl ServerKeys {
    pub fn new(id: u32, key: [u8; KEY_LEN]) -> Self {
        ServerKeys {
            keys: VecDeque::from([(id, key)]),
        }
    }

    /// Makes `key` (named `id`) the one new cookies are sealed with.
    pub fn rotate(&mut self, id: u32, key: [u8; KEY_LEN]) {
        self.keys.push_front((id, key));
        self.keys.truncate(SERVER_KEYS_KEPT);
    }

    /// The id of the key new cookies are sealed with.
    pub fn current_id(&self) -> u32 {
        self.keys[0].0
    }

    /// The keys for the state file (so that clients' cookies outlive a restart, as
    /// chrony's `ntsdumpdir` keeps them): a line per key, newest first, "ID HEX_KEY".
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut text = String::new();
        for (id, key) in &self.keys {
            let _ = writeln!(text, "{id} {}", hex::encode(key));
        }
        text
    }

    /// Reads [`ServerKeys::to_text`]'s text back (at most [`SERVER_KEYS_KEPT`] keys), or
    /// says which line is wrong.
    pub fn from_text(text: &str) -> Result<ServerKeys, String> {
        let mut keys = VecDeque::new();
        for (n, line) in text.lines().enumerate() {
            let bad = || {
                format!(
                    "line {}: not \"ID HEX_KEY\" with a {KEY_LEN}-byte key",
                    n + 1
                )
            };
            let (id, key) = line.split_once(' ').ok_or_else(bad)?;
            let id: u32 = id.parse().map_err(|_| bad())?;
            let key: [u8; KEY_LEN] = hex::decode(key)
                .ok()
                .and_then(|k| k.try_into().ok())
                .ok_or_else(bad)?;
            keys.push_back((id, key));
        }
        if keys.is_empty() {
            return Err("no key".into());
        }
        keys.truncate(SERVER_KEYS_KEPT);
        Ok(ServerKeys { keys })
    }

    /// A cookie holding `session`, sealed with the current key and `nonce` (fresh for
    /// every cookie).
    pub fn seal(&self, session: &SessionKeys, nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
        let (id, key) = &self.keys[0];
        let mut plaintext = [0u8; 2 * KEY_LEN];
        plaintext[..KEY_LEN].copy_from_slice(&session.c2s);
        plaintext[KEY_LEN..].copy_from_slice(&session.s2c);
        let id = id.to_be_bytes();
        let sealed = Aes128SivAead::new(key.into())
            .encrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: &plaintext,
                    aad: &id,
                },
            )
            .expect("AES-SIV encrypts any length");
        let mut cookie = Vec::with_capacity(COOKIE_LEN);
        cookie.extend_from_slice(&id);
        cookie.extend_from_slice(nonce);
        cookie.extend_from_slice(&sealed);
        cookie
    }

    /// The session a cookie holds; None for a cookie not made with a key kept here
    /// (forged, damaged, or older than the keys kept).
    pub fn open(&self, cookie: &[u8]) -> Option<SessionKeys> {
        if cookie.len() != COOKIE_LEN {
            return None;
        }
        let (id, rest) = cookie.split_at(4);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let id_value = u32::from_be_bytes(id.try_into().expect("4 bytes"));
        let (_, key) = self.keys.iter().find(|(kept, _)| *kept == id_value)?;
        let plaintext = Aes128SivAead::new(key.into())
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: id,
                },
            )
            .ok()?;
        let mut session = SessionKeys {
            c2s: [0; KEY_LEN],
            s2c: [0; KEY_LEN],
        };
        session.c2s.copy_from_slice(&plaintext[..KEY_LEN]);
        session.s2c.copy_from_slice(&plaintext[KEY_LEN..]);
        Some(session)
    }
}

/// The answer to a client's NTS-KE request (RFC 8915 §4): NTPv4 and AEAD_AES_SIV_CMAC_256
/// when the client offers them, the NTP port when it is not 123, and eight cookies from
/// `cookie` (called only then); otherwise the refusal the RFC prescribes. The second value
/// says whether the exchange succeeded (cookies were given).
pub fn ke_answer(
    request: &[KeRecord],
    ntp_port: u16,
    mut cookie: impl FnMut() -> Vec<u8>,
) -> (Vec<KeRecord>, bool) {
    let refuse = |code| (vec![KeRecord::Error(code), KeRecord::EndOfMessage], false);
    let mut protocols = None;
    let mut aeads = None;
    for record in request {
        match record {
            KeRecord::Unknown { critical: true, .. } => return refuse(0),
            // A second Next Protocol record, or a client sending errors and warnings:
            // a bad request (§4.1.2, §4.1.3).
            KeRecord::NextProtocol(_) if protocols.is_some() => return refuse(1),
            KeRecord::NextProtocol(ids) => protocols = Some(ids),
            KeRecord::Aead(ids) => aeads = Some(ids),
            KeRecord::Error(_) | KeRecord::Warning(_) => return refuse(1),
            // Cookies and the client's server/port wishes are ignored (ours are given).
            KeRecord::NewCookie(_)
            | KeRecord::Server(_)
            | KeRecord::Port(_)
            | KeRecord::Unknown { .. }
            | KeRecord::EndOfMessage => {}
        }
    }
    let Some(protocols) = protocols else {
        return refuse(1);
    };
    if !protocols.contains(&PROTOCOL_NTPV4) {
        // None of the client's protocols: an empty Next Protocol record (§4.1.2).
        return (
            vec![KeRecord::NextProtocol(Vec::new()), KeRecord::EndOfMessage],
            false,
        );
    }
    let Some(aeads) = aeads else {
        // NTPv4 needs an AEAD algorithm negotiated (§4.1.5).
        return refuse(1);
    };
    let mut answer = vec![KeRecord::NextProtocol(vec![PROTOCOL_NTPV4])];
    if !aeads.contains(&AEAD_AES_SIV_CMAC_256) {
        answer.extend([KeRecord::Aead(Vec::new()), KeRecord::EndOfMessage]);
        return (answer, false);
    }
    answer.push(KeRecord::Aead(vec![AEAD_AES_SIV_CMAC_256]));
    if ntp_port != 123 {
        answer.push(KeRecord::Port(ntp_port));
    }
    answer.extend((0..COOKIES_WANTED).map(|_| KeRecord::NewCookie(cookie())));
    answer.push(KeRecord::EndOfMessage);
    (answer, true)
}

/// What an NTP request's NTS extension fields come to.
#[derive(Debug, PartialEq, Eq)]
pub enum NtsRequest {
    /// No NTS cookie: a plain NTP request (or one whose trailer is not extension fields,
    /// such as a symmetric-key MAC), answered as such.
    Plain,
    /// Authenticated with the session its cookie holds: answer with `cookies` fresh
    /// cookies (the one spent and one per placeholder, at most eight).
    Authentic {
        unique_id: Vec<u8>,
        session: SessionKeys,
        cookies: usize,
    },
    /// The cookie is not one of ours (any more), or the authenticator does not verify:
    /// answered with an NTS NAK so the client makes a new key exchange (§5.7).
    Nak { unique_id: Vec<u8> },
    /// NTS fields that break the RFC's rules: no answer.
    Malformed(String),
}

/// Reads the NTS fields of a request (after its 48-byte header).
pub fn read_request(packet: &[u8], keys: &ServerKeys) -> NtsRequest {
    let Ok(fields) = nts::extensions(packet) else {
        return NtsRequest::Plain;
    };
    let field = |kind| fields.iter().filter(move |f| f.kind == kind);
    let mut cookies = field(EF_COOKIE);
    let Some(cookie) = cookies.next() else {
        return NtsRequest::Plain;
    };
    let malformed = |what: &str| NtsRequest::Malformed(what.to_string());
    if cookies.next().is_some() {
        return malformed("more than one NTS cookie");
    }
    let mut ids = field(EF_UNIQUE_IDENTIFIER);
    let (Some(id), None) = (ids.next(), ids.next()) else {
        return malformed("an NTS request needs exactly one unique identifier");
    };
    let unique_id = packet[id.value.clone()].to_vec();
    if unique_id.len() < MIN_UNIQUE_ID_LEN {
        return malformed("a unique identifier shorter than 32 bytes");
    }
    if field(EF_AUTHENTICATOR).count() != 1 {
        return malformed("an NTS request needs exactly one authenticator");
    }
    let placeholders = field(EF_COOKIE_PLACEHOLDER).count();
    let Some(session) = keys.open(&packet[cookie.value.clone()]) else {
        return NtsRequest::Nak { unique_id };
    };
    match nts::open_authenticator(packet, &fields, &session.c2s) {
        Ok(_) => NtsRequest::Authentic {
            unique_id,
            session,
            cookies: (1 + placeholders).min(COOKIES_WANTED),
        },
        Err(nts::NtsError::Malformed(what)) => NtsRequest::Malformed(what),
        Err(_) => NtsRequest::Nak { unique_id },
    }
}

/// The length of an extension field carrying `value_len` bytes (padded as
/// [`nts::put_extension`] pads).
fn field_len(value_len: usize) -> usize {
    (4 + value_len).next_multiple_of(4).max(16)
}

/// The authenticated reply: `header` (the NTP reply, its transmit timestamp already set:
/// the authenticator covers it), the request's unique identifier, and the authenticator
/// with the server-to-client key over as many fresh cookies as asked for, fewer if the
/// reply would otherwise be longer than the request (`request_len`: no amplification,
/// RFC 8915 §5.7). `random` fills each cookie's nonce and the authenticator's.
pub fn reply(
    header: &[u8; HEADER_LEN],
    request_len: usize,
    unique_id: &[u8],
    session: &SessionKeys,
    cookies: usize,
    keys: &ServerKeys,
    random: &mut dyn FnMut(&mut [u8]),
) -> Vec<u8> {
    let reply_len = |cookies: usize| {
        let inner = cookies * field_len(COOKIE_LEN);
        HEADER_LEN
            + field_len(unique_id.len())
            + field_len(4 + NONCE_LEN + (inner + 16).next_multiple_of(4))
    };
    let mut count = cookies.max(1);
    while count > 1 && reply_len(count) > request_len {
        count -= 1;
    }
    let mut inner = Vec::with_capacity(count * field_len(COOKIE_LEN));
    for _ in 0..count {
        let mut nonce = [0u8; NONCE_LEN];
        random(&mut nonce);
        nts::put_extension(&mut inner, EF_COOKIE, &keys.seal(session, &nonce));
    }
    let mut packet = header.to_vec();
    nts::put_extension(&mut packet, EF_UNIQUE_IDENTIFIER, unique_id);
    let mut nonce = [0u8; NONCE_LEN];
    random(&mut nonce);
    nts::append_authenticator(&mut packet, &session.s2c, &nonce, &inner);
    packet
}

/// An NTS NAK: `header` (a Kiss-o'-Death with code NTSN) and the request's unique
/// identifier, with no cookie and no authenticator (§5.7).
pub fn nak(header: &[u8; HEADER_LEN], unique_id: &[u8]) -> Vec<u8> {
    let mut packet = header.to_vec();
    nts::put_extension(&mut packet, EF_UNIQUE_IDENTIFIER, unique_id);
    packet
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ntp::nts::{ClientSession, ReplyOutcome, UNIQUE_ID_LEN};

    const SESSION: SessionKeys = SessionKeys {
        c2s: [1; KEY_LEN],
        s2c: [2; KEY_LEN],
    };

    /// Deterministic "randomness" for the tests: a counter.
    fn counter() -> impl FnMut(&mut [u8]) {
        let mut n = 0u8;
        move |bytes: &mut [u8]| {
            n = n.wrapping_add(1);
            bytes.fill(n);
        }
    }

    #[test]
    fn a_cookie_opens_under_the_keys_kept_and_no_longer() {
        let mut keys = ServerKeys::new(7, [9; KEY_LEN]);
        let cookie = keys.seal(&SESSION, &[3; NONCE_LEN]);
        assert_eq!(cookie.len(), COOKIE_LEN);
        assert_eq!(&cookie[..4], &7u32.to_be_bytes());
        assert_eq!(keys.open(&cookie), Some(SESSION));
        // Another nonce, another cookie for the same session: unlinkable on the wire.
        assert_ne!(keys.seal(&SESSION, &[4; NONCE_LEN]), cookie);
        // Any damage, or a key id moved onto another key's cookie, is refused.
        for i in [0, 5, 30, COOKIE_LEN - 1] {
            let mut bad = cookie.clone();
            bad[i] ^= 1;
            assert_eq!(keys.open(&bad), None, "byte {i}");
        }
        assert_eq!(keys.open(&cookie[..COOKIE_LEN - 1]), None);
        // Two rotations on, the cookie still opens; the third forgets its key.
        keys.rotate(8, [10; KEY_LEN]);
        keys.rotate(9, [11; KEY_LEN]);
        assert_eq!(keys.current_id(), 9);
        assert_eq!(keys.open(&cookie), Some(SESSION));
        let fresh = keys.seal(&SESSION, &[3; NONCE_LEN]);
        assert_eq!(&fresh[..4], &9u32.to_be_bytes());
        keys.rotate(10, [12; KEY_LEN]);
        assert_eq!(keys.open(&cookie), None);
        assert_eq!(keys.open(&fresh), Some(SESSION));
        // A cookie relabelled with a kept key's id does not open under it.
        let mut relabelled = cookie.clone();
        relabelled[..4].copy_from_slice(&9u32.to_be_bytes());
        assert_eq!(keys.open(&relabelled), None);
    }

    #[test]
    fn the_key_exchange_answer_gives_eight_cookies_and_the_port_or_refuses() {
        let keys = ServerKeys::new(1, [9; KEY_LEN]);
        let request = nts::parse_message(&nts::client_request()).unwrap();
        let mut nonces = counter();
        let (answer, agreed) = ke_answer(&request, 12301, || {
            let mut nonce = [0; NONCE_LEN];
            nonces(&mut nonce);
            keys.seal(&SESSION, &nonce)
        });
        assert!(agreed);
        // What our own client (and chrony's) takes from it.
        let outcome = nts::client_outcome(&answer).unwrap();
        assert_eq!(outcome.cookies.len(), COOKIES_WANTED);
        assert_eq!(outcome.port, Some(12301));
        assert_eq!(outcome.server, None);
        assert!(outcome
            .cookies
            .iter()
            .all(|c| keys.open(c) == Some(SESSION)));
        let (standard, _) = ke_answer(&request, 123, || vec![0; COOKIE_LEN]);
        assert_eq!(nts::client_outcome(&standard).unwrap().port, None);

        let no_cookie = || -> Vec<u8> { panic!("no cookie for a refused exchange") };
        let with = |records: Vec<KeRecord>| {
            let mut r = records;
            r.push(KeRecord::EndOfMessage);
            ke_answer(&r, 123, no_cookie)
        };
        let error = |code| (vec![KeRecord::Error(code), KeRecord::EndOfMessage], false);
        assert_eq!(
            with(vec![
                KeRecord::NextProtocol(vec![0]),
                KeRecord::Aead(vec![15]),
                KeRecord::Unknown {
                    critical: true,
                    kind: 0x4321,
                    body: vec![]
                }
            ]),
            error(0)
        );
        assert_eq!(with(vec![KeRecord::Aead(vec![15])]), error(1));
        assert_eq!(with(vec![KeRecord::NextProtocol(vec![0])]), error(1));
        assert_eq!(
            with(vec![
                KeRecord::NextProtocol(vec![0]),
                KeRecord::NextProtocol(vec![0]),
                KeRecord::Aead(vec![15])
            ]),
            error(1)
        );
        assert_eq!(
            with(vec![
                KeRecord::NextProtocol(vec![7]),
                KeRecord::Aead(vec![15])
            ]),
            (
                vec![KeRecord::NextProtocol(vec![]), KeRecord::EndOfMessage],
                false
            )
        );
        let (other_aead, agreed) = with(vec![
            KeRecord::NextProtocol(vec![0]),
            KeRecord::Aead(vec![30]),
        ]);
        assert!(!agreed);
        assert!(nts::client_outcome(&other_aead).is_err());
        // Non-critical records the server does not know, and the client's wishes, pass.
        let (_, agreed) = ke_answer(
            &[
                KeRecord::NextProtocol(vec![0]),
                KeRecord::Aead(vec![30, 15]),
                KeRecord::Server("elsewhere".into()),
                KeRecord::Unknown {
                    critical: false,
                    kind: 0x4000,
                    body: vec![1],
                },
                KeRecord::EndOfMessage,
            ],
            123,
            || vec![0; COOKIE_LEN],
        );
        assert!(agreed);
    }

    /// A client session as our client keeps it, from cookies this server made.
    fn client(keys: &ServerKeys, cookies: usize) -> ClientSession {
        let mut nonces = counter();
        let jar = (0..cookies)
            .map(|_| {
                let mut nonce = [0; NONCE_LEN];
                nonces(&mut nonce);
                keys.seal(&SESSION, &nonce)
            })
            .collect();
        ClientSession::new(SESSION.c2s, SESSION.s2c, jar)
    }

    #[test]
    fn an_authentic_request_gets_an_authentic_reply_with_its_cookies_back() {
        let keys = ServerKeys::new(1, [9; KEY_LEN]);
        let header = [0x23; HEADER_LEN];
        // Three cookies left: the request spends one and asks for five more back.
        let mut session = client(&keys, 4);
        let uid = [5; UNIQUE_ID_LEN];
        let request = session.request(&header, uid, &[6; NONCE_LEN]).unwrap();
        let NtsRequest::Authentic {
            unique_id,
            session: keys_read,
            cookies,
        } = read_request(&request, &keys)
        else {
            panic!("not authentic: {:?}", read_request(&request, &keys));
        };
        assert_eq!(
            (unique_id.as_slice(), keys_read, cookies),
            (&uid[..], SESSION, 5)
        );
        let answer = reply(
            &[0x24; HEADER_LEN],
            request.len(),
            &unique_id,
            &keys_read,
            cookies,
            &keys,
            &mut counter(),
        );
        assert!(
            answer.len() <= request.len(),
            "{} > {}",
            answer.len(),
            request.len()
        );
        assert_eq!(session.reply(&answer), Ok(ReplyOutcome::Authentic));
        assert_eq!(session.cookies(), 8);
        // A reply may not be longer than its request: a request without placeholders
        // gets one cookie back, even when the server is asked (wrongly) for more.
        let mut full = client(&keys, 8);
        let request = full.request(&header, uid, &[6; NONCE_LEN]).unwrap();
        let answer = reply(
            &[0x24; HEADER_LEN],
            request.len(),
            &uid,
            &SESSION,
            8,
            &keys,
            &mut counter(),
        );
        assert!(answer.len() <= request.len());
        assert_eq!(full.reply(&answer), Ok(ReplyOutcome::Authentic));
        assert_eq!(full.cookies(), 8);
    }

    #[test]
    fn a_foreign_cookie_or_a_forged_request_gets_a_nak_and_broken_fields_nothing() {
        let keys = ServerKeys::new(1, [9; KEY_LEN]);
        let header = [0x23; HEADER_LEN];
        let uid = [5; UNIQUE_ID_LEN];
        // Cookies of a server key not kept (a restart, or another server).
        let other = ServerKeys::new(2, [8; KEY_LEN]);
        let request = client(&other, 2)
            .request(&header, uid, &[6; NONCE_LEN])
            .unwrap();
        assert_eq!(
            read_request(&request, &keys),
            NtsRequest::Nak {
                unique_id: uid.to_vec()
            }
        );
        // The header changed on the way: the authenticator does not verify.
        let mut request = client(&keys, 2)
            .request(&header, uid, &[6; NONCE_LEN])
            .unwrap();
        request[40] ^= 1;
        assert_eq!(
            read_request(&request, &keys),
            NtsRequest::Nak {
                unique_id: uid.to_vec()
            }
        );
        // The NAK the client gets for it asks it for a new key exchange.
        let mut kiss = [0x24; HEADER_LEN];
        kiss[1] = 0;
        kiss[12..16].copy_from_slice(b"NTSN");
        let mut session = client(&keys, 2);
        let request = session.request(&header, uid, &[6; NONCE_LEN]).unwrap();
        assert_eq!(request.len() % 4, 0);
        assert_eq!(session.reply(&nak(&kiss, &uid)), Ok(ReplyOutcome::Nak));

        // Plain requests: no trailer, or a symmetric-key MAC.
        assert_eq!(read_request(&header, &keys), NtsRequest::Plain);
        let mut mac = header.to_vec();
        mac.extend_from_slice(&[0; 20]);
        assert_eq!(read_request(&mac, &keys), NtsRequest::Plain);
        // A cookie without a unique identifier, with two, with a short one, or without
        // an authenticator.
        let mut request = header.to_vec();
        nts::put_extension(&mut request, EF_COOKIE, &keys.seal(&SESSION, &[1; 16]));
        assert!(matches!(
            read_request(&request, &keys),
            NtsRequest::Malformed(_)
        ));
        let mut with_id = request.clone();
        nts::put_extension(&mut with_id, EF_UNIQUE_IDENTIFIER, &uid);
        assert!(
            matches!(read_request(&with_id, &keys), NtsRequest::Malformed(w) if w.contains("authenticator"))
        );
        let mut two_ids = with_id.clone();
        nts::put_extension(&mut two_ids, EF_UNIQUE_IDENTIFIER, &uid);
        assert!(
            matches!(read_request(&two_ids, &keys), NtsRequest::Malformed(w) if w.contains("exactly one unique"))
        );
        let mut short = request.clone();
        nts::put_extension(&mut short, EF_UNIQUE_IDENTIFIER, &[5; 16]);
        nts::append_authenticator(&mut short, &SESSION.c2s, &[6; 16], &[]);
        assert!(
            matches!(read_request(&short, &keys), NtsRequest::Malformed(w) if w.contains("shorter"))
        );
        // Fields after the authenticator.
        let mut appended = client(&keys, 2)
            .request(&header, uid, &[6; NONCE_LEN])
            .unwrap();
        nts::put_extension(&mut appended, EF_COOKIE_PLACEHOLDER, &[0; 100]);
        assert!(matches!(
            read_request(&appended, &keys),
            NtsRequest::Malformed(_)
        ));
    }

    /// No amplification, whatever the request's shape: for every unique identifier length
    /// and number of placeholders a client may send, the authenticated reply is no longer
    /// than the request, and carries one cookie per cookie and placeholder (at most 8).
    #[test]
    fn no_reply_is_longer_than_its_request() {
        let keys = ServerKeys::new(1, [9; KEY_LEN]);
        let cookie = keys.seal(&SESSION, &[3; NONCE_LEN]);
        for uid_len in (MIN_UNIQUE_ID_LEN..=256).step_by(4) {
            for placeholders in 0..=10 {
                let uid = vec![5; uid_len];
                let request = nts::client_packet(
                    &[0x23; HEADER_LEN],
                    &uid,
                    &cookie,
                    placeholders,
                    &SESSION.c2s,
                    &[6; NONCE_LEN],
                );
                let NtsRequest::Authentic { cookies, .. } = read_request(&request, &keys) else {
                    panic!("uid {uid_len}, {placeholders} placeholders: not authentic");
                };
                assert_eq!(cookies, (1 + placeholders).min(COOKIES_WANTED));
                let answer = reply(
                    &[0x24; HEADER_LEN],
                    request.len(),
                    &uid,
                    &SESSION,
                    cookies,
                    &keys,
                    &mut counter(),
                );
                assert!(
                    answer.len() <= request.len(),
                    "uid {uid_len}, {placeholders} placeholders: {} > {}",
                    answer.len(),
                    request.len()
                );
                let got = nts::client_reply(&answer, &uid, &SESSION.s2c).unwrap();
                assert_eq!(
                    got.len(),
                    cookies,
                    "uid {uid_len}, {placeholders} placeholders"
                );
            }
        }
    }

    #[test]
    fn the_keys_round_trip_through_text_and_bad_text_is_named() {
        let mut keys = ServerKeys::new(7, [9; KEY_LEN]);
        keys.rotate(8, [10; KEY_LEN]);
        let cookie = keys.seal(&SESSION, &[3; NONCE_LEN]);
        let text = keys.to_text();
        assert_eq!(text.lines().count(), 2);
        assert!(text.starts_with("8 0a0a"), "{text}");
        let back = ServerKeys::from_text(&text).unwrap();
        assert_eq!((back.current_id(), back.open(&cookie)), (8, Some(SESSION)));
        assert_eq!(ServerKeys::from_text("").err().as_deref(), Some("no key"));
        for bad in ["8", "x 0a", "8 0a0a", "8 zz"] {
            let err = ServerKeys::from_text(&format!("{}{bad}\n", text))
                .err()
                .unwrap();
            assert!(err.starts_with("line 3:"), "{bad}: {err}");
        }
    }
}
