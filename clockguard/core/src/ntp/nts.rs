//! Network Time Security (RFC 8915), sans-IO: the NTS-KE records exchanged over TLS 1.3,
//! the keys' exporter context, and the NTS extension fields of an NTP packet with their
//! AEAD (AEAD_AES_SIV_CMAC_256, from the `aes-siv` crate). The daemon owns the TLS
//! connection, the randomness (unique identifiers, nonces) and the sockets.
//!
//! NTS-KE record (§4):
//! ```text
//! |C|        Record Type (15)      |          Body Length           |
//! |                         Record Body ...                          |
//! ```
//! NTP extension field (RFC 7822), padded to a multiple of 4 bytes:
//! ```text
//! |          Field Type            |       Length (whole field)     |
//! |                              Value ...                           |
//! ```

use aes_siv::{
    aead::{Aead, KeyInit, Payload},
    Aes128SivAead, Nonce,
};
use bytes::{Buf, BufMut};

use super::packet::HEADER_LEN;

/// NTS-KE's ALPN protocol id and default port.
pub const ALPN: &[u8] = b"ntske/1";
pub const KE_PORT: u16 = 4460;

/// The TLS exporter label the NTS keys are derived with (§5.1).
pub const EXPORTER_LABEL: &str = "EXPORTER-network-time-security";

/// Next protocol: NTPv4. AEAD: AEAD_AES_SIV_CMAC_256 (the one every implementation has).
pub const PROTOCOL_NTPV4: u16 = 0;
pub const AEAD_AES_SIV_CMAC_256: u16 = 15;
/// Its key length (bytes): two AES-128 keys.
pub const KEY_LEN: usize = 32;
/// The nonce this side uses (bytes); SIV takes any, 16 is what RFC 8915 asks at least.
pub const NONCE_LEN: usize = 16;

/// Record types (§4.1).
const END_OF_MESSAGE: u16 = 0;
const NEXT_PROTOCOL: u16 = 1;
const ERROR: u16 = 2;
const WARNING: u16 = 3;
const AEAD_ALGORITHM: u16 = 4;
const NEW_COOKIE: u16 = 5;
const SERVER: u16 = 6;
const PORT: u16 = 7;
const CRITICAL: u16 = 0x8000;

/// NTP extension field types (§5.7).
pub const EF_UNIQUE_IDENTIFIER: u16 = 0x0104;
pub const EF_COOKIE: u16 = 0x0204;
pub const EF_COOKIE_PLACEHOLDER: u16 = 0x0304;
pub const EF_AUTHENTICATOR: u16 = 0x0404;

/// Cookies a client asks to hold: the server sends this many at the key exchange, and
/// one back for each request (more for each placeholder).
pub const COOKIES_WANTED: usize = 8;
/// The longest cookie taken (bytes). Servers' cookies are about 100 bytes (chrony's and
/// ntpd-rs's); the bound keeps a request with its placeholders, and the reply that carries
/// as many cookies back, within a few KiB and an extension field's 64 KiB.
pub const MAX_COOKIE_LEN: usize = 256;

/// One NTS-KE record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeRecord {
    EndOfMessage,
    NextProtocol(Vec<u16>),
    Error(u16),
    Warning(u16),
    Aead(Vec<u16>),
    NewCookie(Vec<u8>),
    Server(String),
    Port(u16),
    /// A record type this side does not know.
    Unknown {
        critical: bool,
        kind: u16,
        body: Vec<u8>,
    },
}

/// What is wrong with NTS-KE bytes, or with the server's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeError {
    /// The message is cut short: more bytes are needed.
    Incomplete,
    Malformed(String),
    /// The server answered with an Error record (§4.1.3).
    ServerError(u16),
    /// The server chose nothing this side speaks.
    Refused(String),
}

impl std::fmt::Display for KeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeError::Incomplete => write!(f, "the NTS-KE message ends before its End of Message"),
            KeError::Malformed(what) => write!(f, "malformed NTS-KE record: {what}"),
            KeError::ServerError(code) => write!(
                f,
                "the NTS-KE server refused: error {code} ({})",
                match code {
                    0 => "unrecognized critical record",
                    1 => "bad request",
                    2 => "internal server error",
                    _ => "unknown error code",
                }
            ),
            KeError::Refused(why) => write!(f, "NTS-KE: {why}"),
        }
    }
}

impl std::error::Error for KeError {}

impl KeRecord {
    fn write(&self, out: &mut Vec<u8>) {
        let u16s = |values: &[u16]| values.iter().flat_map(|v| v.to_be_bytes()).collect();
        let (kind, critical, body): (u16, bool, Vec<u8>) = match self {
            KeRecord::EndOfMessage => (END_OF_MESSAGE, true, Vec::new()),
            KeRecord::NextProtocol(ids) => (NEXT_PROTOCOL, true, u16s(ids)),
            KeRecord::Error(code) => (ERROR, true, code.to_be_bytes().to_vec()),
            KeRecord::Warning(code) => (WARNING, true, code.to_be_bytes().to_vec()),
            KeRecord::Aead(ids) => (AEAD_ALGORITHM, false, u16s(ids)),
            KeRecord::NewCookie(cookie) => (NEW_COOKIE, false, cookie.clone()),
            KeRecord::Server(name) => (SERVER, false, name.as_bytes().to_vec()),
            KeRecord::Port(port) => (PORT, false, port.to_be_bytes().to_vec()),
            KeRecord::Unknown {
                critical,
                kind,
                body,
            } => (*kind, *critical, body.clone()),
        };
        out.put_u16(kind | if critical { CRITICAL } else { 0 });
        out.put_u16(u16::try_from(body.len()).expect("an NTS-KE record body fits 64 KiB"));
        out.extend_from_slice(&body);
    }
}

/// The records as bytes.
pub fn encode_records(records: &[KeRecord]) -> Vec<u8> {
    let mut out = Vec::new();
    for record in records {
        record.write(&mut out);
    }
    out
}

/// A client's request: NTPv4 with AEAD_AES_SIV_CMAC_256.
pub fn client_request() -> Vec<u8> {
    encode_records(&[
        KeRecord::NextProtocol(vec![PROTOCOL_NTPV4]),
        KeRecord::Aead(vec![AEAD_AES_SIV_CMAC_256]),
        KeRecord::EndOfMessage,
    ])
}

/// Parses one whole message (up to and including its End of Message) from the start of
/// `bytes`; `Incomplete` while it has not all arrived.
pub fn parse_message(bytes: &[u8]) -> Result<Vec<KeRecord>, KeError> {
    let mut rest = bytes;
    let mut records = Vec::new();
    loop {
        if rest.len() < 4 {
            return Err(KeError::Incomplete);
        }
        let head = rest.get_u16();
        let len = usize::from(rest.get_u16());
        if rest.len() < len {
            return Err(KeError::Incomplete);
        }
        let (mut body, after) = rest.split_at(len);
        rest = after;
        let critical = head & CRITICAL != 0;
        let kind = head & !CRITICAL;
        let u16_list = |body: &[u8], what: &str| {
            if !body.len().is_multiple_of(2) {
                return Err(KeError::Malformed(format!(
                    "{what} has {} bytes, not a list of 16-bit ids",
                    body.len()
                )));
            }
            Ok(body
                .chunks(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
                .collect())
        };
        let one_u16 = |body: &mut &[u8], what: &str| {
            if body.len() != 2 {
                return Err(KeError::Malformed(format!(
                    "{what} has {} bytes, not 2",
                    body.len()
                )));
            }
            Ok(body.get_u16())
        };
        let record = match kind {
            END_OF_MESSAGE => {
                if len != 0 {
                    return Err(KeError::Malformed(format!(
                        "End of Message with a {len}-byte body"
                    )));
                }
                records.push(KeRecord::EndOfMessage);
                return Ok(records);
            }
            NEXT_PROTOCOL => KeRecord::NextProtocol(u16_list(body, "Next Protocol")?),
            ERROR => KeRecord::Error(one_u16(&mut body, "Error")?),
            WARNING => KeRecord::Warning(one_u16(&mut body, "Warning")?),
            AEAD_ALGORITHM => KeRecord::Aead(u16_list(body, "AEAD Algorithm")?),
            NEW_COOKIE => KeRecord::NewCookie(body.to_vec()),
            SERVER => KeRecord::Server(
                std::str::from_utf8(body)
                    .map_err(|_| KeError::Malformed("a Server name that is not UTF-8".into()))?
                    .to_string(),
            ),
            PORT => KeRecord::Port(one_u16(&mut body, "Port")?),
            kind => KeRecord::Unknown {
                critical,
                kind,
                body: body.to_vec(),
            },
        };
        records.push(record);
    }
}

/// What a client takes from the server's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeOutcome {
    pub cookies: Vec<Vec<u8>>,
    /// Where to send NTP, when not to the NTS-KE server's own address and port 123.
    pub server: Option<String>,
    pub port: Option<u16>,
}

/// Checks the server's answer to [`client_request`] (§4.1) and takes its cookies.
pub fn client_outcome(records: &[KeRecord]) -> Result<KeOutcome, KeError> {
    let mut outcome = KeOutcome {
        cookies: Vec::new(),
        server: None,
        port: None,
    };
    let mut protocol_ok = false;
    let mut aead_ok = false;
    for record in records {
        match record {
            KeRecord::Error(code) => return Err(KeError::ServerError(*code)),
            KeRecord::NextProtocol(ids) => protocol_ok = ids == &[PROTOCOL_NTPV4],
            KeRecord::Aead(ids) => aead_ok = ids == &[AEAD_AES_SIV_CMAC_256],
            KeRecord::NewCookie(cookie) if cookie.len() > MAX_COOKIE_LEN => {
                return Err(KeError::Refused(format!(
                    "the server sent a {}-byte cookie (at most {MAX_COOKIE_LEN} are taken)",
                    cookie.len()
                )))
            }
            KeRecord::NewCookie(cookie) => outcome.cookies.push(cookie.clone()),
            KeRecord::Server(name) => outcome.server = Some(name.clone()),
            KeRecord::Port(port) => outcome.port = Some(*port),
            KeRecord::Unknown {
                critical: true,
                kind,
                ..
            } => {
                return Err(KeError::Refused(format!(
                    "the server sent a critical record of unknown type {kind}"
                )))
            }
            KeRecord::Warning(_)
            | KeRecord::Unknown {
                critical: false, ..
            }
            | KeRecord::EndOfMessage => {}
        }
    }
    if !protocol_ok {
        return Err(KeError::Refused("the server does not offer NTPv4".into()));
    }
    if !aead_ok {
        return Err(KeError::Refused(
            "the server does not offer AEAD_AES_SIV_CMAC_256".into(),
        ));
    }
    if outcome.cookies.is_empty() {
        return Err(KeError::Refused("the server sent no cookie".into()));
    }
    Ok(outcome)
}

/// The TLS exporter's context for the client-to-server (`c2s`) or server-to-client key
/// (§5.1): protocol id, AEAD id, direction.
pub fn exporter_context(c2s: bool) -> [u8; 5] {
    let [p0, p1] = PROTOCOL_NTPV4.to_be_bytes();
    let [a0, a1] = AEAD_AES_SIV_CMAC_256.to_be_bytes();
    [p0, p1, a0, a1, u8::from(!c2s)]
}

/// Appends an extension field, padded to a multiple of 4 bytes (and at least 16, RFC
/// 7822's shortest).
pub fn put_extension(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = (4 + value.len()).next_multiple_of(4).max(16);
    out.put_u16(kind);
    out.put_u16(u16::try_from(len).expect("an extension field fits 64 KiB"));
    out.extend_from_slice(value);
    out.resize(out.len() + len - 4 - value.len(), 0);
}

/// An extension field in a packet: its type and where its value is (with padding).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extension {
    pub kind: u16,
    /// Offsets in the packet: the field's start, and its value's.
    pub start: usize,
    pub value: std::ops::Range<usize>,
}

/// What is wrong with an NTS packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NtsError {
    Malformed(String),
    /// No unique identifier, or not the request's: not the answer to it.
    NotOurs,
    /// No authenticator, or one that does not verify: forged, or keys that are not ours.
    Unauthenticated,
}

impl std::fmt::Display for NtsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NtsError::Malformed(what) => write!(f, "malformed NTS packet: {what}"),
            NtsError::NotOurs => write!(
                f,
                "the reply does not carry the request's unique identifier"
            ),
            NtsError::Unauthenticated => write!(f, "the reply's NTS authenticator does not verify"),
        }
    }
}

impl std::error::Error for NtsError {}

/// The extension fields after the header of `packet`, in order. The authenticator is the
/// last one NTS reads: anything after it is not authenticated and is refused.
pub fn extensions(packet: &[u8]) -> Result<Vec<Extension>, NtsError> {
    extensions_from(packet, HEADER_LEN)
}

/// The extension fields of `packet` from offset `at` on (after a header, or the whole of a
/// decrypted authenticator's plaintext).
fn extensions_from(packet: &[u8], mut at: usize) -> Result<Vec<Extension>, NtsError> {
    let mut found = Vec::new();
    while at < packet.len() {
        let Some(head) = packet.get(at..at + 4) else {
            return Err(NtsError::Malformed(format!(
                "{} stray bytes after the extension fields",
                packet.len() - at
            )));
        };
        let kind = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        if len < 4 || !len.is_multiple_of(4) || at + len > packet.len() {
            return Err(NtsError::Malformed(format!(
                "extension field {kind:#06x} at byte {at} has length {len} ({} bytes left)",
                packet.len() - at
            )));
        }
        found.push(Extension {
            kind,
            start: at,
            value: at + 4..at + len,
        });
        at += len;
    }
    Ok(found)
}

/// Appends the authenticator over everything in `packet` so far (the associated data),
/// encrypting `plaintext` (extension fields, or nothing) with `key` and `nonce`.
pub fn append_authenticator(
    packet: &mut Vec<u8>,
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    plaintext: &[u8],
) {
    let cipher = Aes128SivAead::new(key.into());
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: plaintext,
                aad: packet,
            },
        )
        .expect("AES-SIV encrypts any length");
    let mut value = Vec::with_capacity(4 + NONCE_LEN + ciphertext.len() + 4);
    value.put_u16(NONCE_LEN as u16);
    value.put_u16(u16::try_from(ciphertext.len()).expect("a ciphertext fits 64 KiB"));
    value.extend_from_slice(nonce);
    value.extend_from_slice(&ciphertext);
    value.resize(value.len().next_multiple_of(4), 0);
    put_extension(packet, EF_AUTHENTICATOR, &value);
}

/// Verifies the authenticator of `packet` (the last extension field) with `key` and
/// returns the decrypted extension fields' bytes.
pub fn open_authenticator(
    packet: &[u8],
    fields: &[Extension],
    key: &[u8; KEY_LEN],
) -> Result<Vec<u8>, NtsError> {
    let Some(auth) = fields.iter().position(|f| f.kind == EF_AUTHENTICATOR) else {
        return Err(NtsError::Unauthenticated);
    };
    if auth + 1 != fields.len() {
        return Err(NtsError::Malformed(
            "extension fields after the authenticator".into(),
        ));
    }
    let field = &fields[auth];
    let mut value = &packet[field.value.clone()];
    if value.len() < 4 {
        return Err(NtsError::Malformed("a truncated authenticator".into()));
    }
    let nonce_len = usize::from(value.get_u16());
    let ciphertext_len = usize::from(value.get_u16());
    let nonce_padded = nonce_len.next_multiple_of(4);
    if nonce_len == 0 || nonce_padded + ciphertext_len > value.len() {
        return Err(NtsError::Malformed(format!(
            "an authenticator with a {nonce_len}-byte nonce and a {ciphertext_len}-byte \
             ciphertext in {} bytes",
            value.len()
        )));
    }
    let nonce = &value[..nonce_len];
    let ciphertext = &value[nonce_padded..nonce_padded + ciphertext_len];
    // SIV takes nonces of any length; the `Aead` trait wants the 16-byte kind.
    if nonce.len() != NONCE_LEN {
        return Err(NtsError::Malformed(format!(
            "a {}-byte nonce (this side takes {NONCE_LEN})",
            nonce.len()
        )));
    }
    Aes128SivAead::new(key.into())
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: &packet[..field.start],
            },
        )
        .map_err(|_| NtsError::Unauthenticated)
}

/// A client's NTS request: the 48-byte header, then the unique identifier, a cookie,
/// `placeholders` cookie placeholders (asking for that many more cookies back) and the
/// authenticator with the client-to-server key.
pub fn client_packet(
    header: &[u8; HEADER_LEN],
    unique_id: &[u8],
    cookie: &[u8],
    placeholders: usize,
    c2s: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
) -> Vec<u8> {
    let mut packet = header.to_vec();
    put_extension(&mut packet, EF_UNIQUE_IDENTIFIER, unique_id);
    put_extension(&mut packet, EF_COOKIE, cookie);
    for _ in 0..placeholders {
        put_extension(&mut packet, EF_COOKIE_PLACEHOLDER, &vec![0; cookie.len()]);
    }
    append_authenticator(&mut packet, c2s, nonce, &[]);
    packet
}

/// Whether an extension field's value is exactly `unique_id` (and its zero padding).
fn is_unique_id(value: &[u8], unique_id: &[u8]) -> bool {
    value.len() >= unique_id.len()
        && &value[..unique_id.len()] == unique_id
        && value[unique_id.len()..].iter().all(|&b| b == 0)
}

/// Checks a server's reply to the request with `unique_id`, authenticated with the
/// server-to-client key, and returns the new cookies it carried (encrypted).
pub fn client_reply(
    packet: &[u8],
    unique_id: &[u8],
    s2c: &[u8; KEY_LEN],
) -> Result<Vec<Vec<u8>>, NtsError> {
    let fields = extensions(packet)?;
    let ours = fields.iter().any(|f| {
        f.kind == EF_UNIQUE_IDENTIFIER && is_unique_id(&packet[f.value.clone()], unique_id)
    });
    if !ours {
        return Err(NtsError::NotOurs);
    }
    let plaintext = open_authenticator(packet, &fields, s2c)?;
    Ok(extensions_from(&plaintext, 0)?
        .into_iter()
        .filter(|f| f.kind == EF_COOKIE)
        .map(|f| plaintext[f.value].to_vec())
        .collect())
}

/// The unique identifier's length this side sends (bytes; RFC 8915 asks at least 32).
pub const UNIQUE_ID_LEN: usize = 32;

/// One NTS source's state between key exchanges: the keys the TLS exporter gave, the
/// cookies left (each is used once), and the unique identifier of the request in flight.
/// The daemon supplies the randomness and does the I/O.
pub struct ClientSession {
    c2s: [u8; KEY_LEN],
    s2c: [u8; KEY_LEN],
    cookies: std::collections::VecDeque<Vec<u8>>,
    in_flight: Option<[u8; UNIQUE_ID_LEN]>,
    /// An NTS NAK came for a request and no authentic reply since.
    nak_pending: bool,
}

/// What a reply to an NTS request came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyOutcome {
    /// Authenticated: its first [`HEADER_LEN`] bytes are the NTP header to use.
    Authentic,
    /// An NTS negative acknowledgement (kiss code NTSN, §5.7) for the request in flight:
    /// the server says it cannot read our cookie. It is unauthenticated by design, so it
    /// changes nothing at once: the request stays in flight (a genuine reply may still
    /// come) and the cookies are kept. Unless an authentic reply comes first, the next
    /// poll asks for a new key exchange instead of a request. An on-path attacker can
    /// force key exchanges this way, but cannot move the clock.
    Nak,
}

impl ClientSession {
    pub fn new(c2s: [u8; KEY_LEN], s2c: [u8; KEY_LEN], cookies: Vec<Vec<u8>>) -> Self {
        ClientSession {
            c2s,
            s2c,
            cookies: cookies.into_iter().take(COOKIES_WANTED).collect(),
            in_flight: None,
            nak_pending: false,
        }
    }

    pub fn cookies(&self) -> usize {
        self.cookies.len()
    }

    /// The NTS request for `header`, spending a cookie and asking (with placeholders) for
    /// as many back as keep the jar at [`COOKIES_WANTED`] when the reply arrives. None when
    /// a new key exchange is needed: no cookie is left, or an NTS NAK was not followed by
    /// an authentic reply before this poll.
    pub fn request(
        &mut self,
        header: &[u8; HEADER_LEN],
        unique_id: [u8; UNIQUE_ID_LEN],
        nonce: &[u8; NONCE_LEN],
    ) -> Option<Vec<u8>> {
        if self.nak_pending {
            return None;
        }
        let cookie = self.cookies.pop_front()?;
        // The reply carries one cookie per cookie and placeholder sent.
        let placeholders = COOKIES_WANTED.saturating_sub(self.cookies.len() + 1);
        self.in_flight = Some(unique_id);
        Some(client_packet(
            header,
            &unique_id,
            &cookie,
            placeholders,
            &self.c2s,
            nonce,
        ))
    }

    /// Checks a reply against the request in flight. Authentic: its cookies join the jar
    /// and the identifier is spent (a replay of the same reply is then not ours). A forged
    /// reply leaves the request in flight, so the genuine one is still taken.
    pub fn reply(&mut self, packet: &[u8]) -> Result<ReplyOutcome, NtsError> {
        let Some(unique_id) = self.in_flight else {
            return Err(NtsError::NotOurs);
        };
        match client_reply(packet, &unique_id, &self.s2c) {
            Ok(cookies) => {
                self.in_flight = None;
                self.nak_pending = false;
                // A cookie too long to carry is dropped (the next request asks again).
                for cookie in cookies.into_iter().filter(|c| c.len() <= MAX_COOKIE_LEN) {
                    if self.cookies.len() < COOKIES_WANTED {
                        self.cookies.push_back(cookie);
                    }
                }
                Ok(ReplyOutcome::Authentic)
            }
            Err(NtsError::Unauthenticated) if is_nts_nak(packet) => {
                self.nak_pending = true;
                Ok(ReplyOutcome::Nak)
            }
            Err(err) => Err(err),
        }
    }
}

/// A server's (mode 4) kiss-o'-death with code NTSN (stratum 0, reference id "NTSN").
fn is_nts_nak(packet: &[u8]) -> bool {
    packet.len() >= HEADER_LEN
        && packet[0] & 0x07 == 4
        && packet[1] == 0
        && &packet[12..16] == b"NTSN"
}

/// How long to wait before key exchange attempt `failures + 1` after `failures` failed in
/// a row (s): 16 s, doubling to 1024 s (chrony backs off the same way), so that a server
/// that is down is not hammered with TLS handshakes.
pub fn key_exchange_backoff_s(failures: u32) -> u64 {
    16u64 << failures.saturating_sub(1).min(6)
}

#[cfg(test)]
mod tests {
    use super::*;

    const C2S: [u8; KEY_LEN] = [1; KEY_LEN];
    const S2C: [u8; KEY_LEN] = [2; KEY_LEN];
    const NONCE: [u8; NONCE_LEN] = [3; NONCE_LEN];
    const UID: [u8; 32] = [4; 32];

    #[test]
    fn the_client_request_is_rfc_8915_s_bytes() {
        // Next Protocol (critical) [0], AEAD [15], End of Message (critical).
        assert_eq!(
            client_request(),
            [0x80, 1, 0, 2, 0, 0, 0, 4, 0, 2, 0, 15, 0x80, 0, 0, 0]
        );
        assert_eq!(parse_message(&client_request()).unwrap().len(), 3);
    }

    /// A server's answer as chrony sends it: protocol, AEAD, eight cookies, the end.
    fn server_answer(extra: &[KeRecord]) -> Vec<KeRecord> {
        let mut records = vec![
            KeRecord::NextProtocol(vec![PROTOCOL_NTPV4]),
            KeRecord::Aead(vec![AEAD_AES_SIV_CMAC_256]),
        ];
        records.extend(extra.iter().cloned());
        records.extend((0..8u8).map(|i| KeRecord::NewCookie(vec![i; 100])));
        records.push(KeRecord::EndOfMessage);
        records
    }

    #[test]
    fn an_answer_round_trips_and_gives_its_cookies_server_and_port() {
        let sent = server_answer(&[
            KeRecord::Server("ntp.example".into()),
            KeRecord::Port(1123),
            KeRecord::Warning(7),
            KeRecord::Unknown {
                critical: false,
                kind: 0x4000,
                body: vec![9; 3],
            },
        ]);
        let bytes = encode_records(&sent);
        let parsed = parse_message(&bytes).unwrap();
        assert_eq!(parsed, sent);
        let outcome = client_outcome(&parsed).unwrap();
        assert_eq!(outcome.cookies.len(), 8);
        assert_eq!(outcome.server.as_deref(), Some("ntp.example"));
        assert_eq!(outcome.port, Some(1123));
        // Any cut short is incomplete, never a wrong answer.
        for cut in 0..bytes.len() {
            assert_eq!(
                parse_message(&bytes[..cut]),
                Err(KeError::Incomplete),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn errors_refusals_and_malformed_records_are_named() {
        let err = client_outcome(&[KeRecord::Error(1), KeRecord::EndOfMessage]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the NTS-KE server refused: error 1 (bad request)"
        );
        let no_cookie = [
            KeRecord::NextProtocol(vec![0]),
            KeRecord::Aead(vec![15]),
            KeRecord::EndOfMessage,
        ];
        assert!(client_outcome(&no_cookie)
            .unwrap_err()
            .to_string()
            .contains("no cookie"));
        let mut other_aead = server_answer(&[]);
        other_aead[1] = KeRecord::Aead(vec![30]);
        assert!(client_outcome(&other_aead)
            .unwrap_err()
            .to_string()
            .contains("AEAD_AES_SIV_CMAC_256"));
        let critical = server_answer(&[KeRecord::Unknown {
            critical: true,
            kind: 0x1234,
            body: vec![],
        }]);
        assert!(client_outcome(&critical)
            .unwrap_err()
            .to_string()
            .contains("critical record of unknown type 4660"));
        // An odd-length id list and an End of Message with a body.
        let odd = [0x80, 1, 0, 1, 0, 0x80, 0, 0, 0];
        assert!(matches!(parse_message(&odd), Err(KeError::Malformed(_))));
        let long_end = [0x80, 0, 0, 1, 0];
        assert!(matches!(
            parse_message(&long_end),
            Err(KeError::Malformed(_))
        ));
    }

    #[test]
    fn the_exporter_contexts_differ_by_direction_only() {
        assert_eq!(exporter_context(true), [0, 0, 0, 15, 0]);
        assert_eq!(exporter_context(false), [0, 0, 0, 15, 1]);
    }

    /// A server's reply to a request with UID: the header, the UID echoed, and the
    /// authenticator over them with `cookies` encrypted inside.
    fn server_reply(uid: &[u8], cookies: &[Vec<u8>], key: &[u8; KEY_LEN]) -> Vec<u8> {
        let mut packet = vec![0x24; HEADER_LEN];
        put_extension(&mut packet, EF_UNIQUE_IDENTIFIER, uid);
        let mut inner = Vec::new();
        for cookie in cookies {
            put_extension(&mut inner, EF_COOKIE, cookie);
        }
        append_authenticator(&mut packet, key, &NONCE, &inner);
        packet
    }

    #[test]
    fn a_request_is_laid_out_and_authenticated_for_the_server() {
        let header = [0x23; HEADER_LEN];
        let cookie = vec![7; 100];
        let packet = client_packet(&header, &UID, &cookie, 2, &C2S, &NONCE);
        assert_eq!(packet.len() % 4, 0);
        let fields = extensions(&packet).unwrap();
        let kinds: Vec<u16> = fields.iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            [
                EF_UNIQUE_IDENTIFIER,
                EF_COOKIE,
                EF_COOKIE_PLACEHOLDER,
                EF_COOKIE_PLACEHOLDER,
                EF_AUTHENTICATOR
            ]
        );
        assert_eq!(&packet[fields[1].value.clone()], cookie.as_slice());
        // The server opens it with the same key (empty plaintext), not with another.
        assert_eq!(
            open_authenticator(&packet, &fields, &C2S).unwrap(),
            Vec::<u8>::new()
        );
        assert_eq!(
            open_authenticator(&packet, &fields, &S2C),
            Err(NtsError::Unauthenticated)
        );
    }

    #[test]
    fn a_reply_gives_its_cookies_and_a_forged_or_foreign_one_is_refused() {
        let cookies = vec![vec![5; 100], vec![6; 100]];
        let reply = server_reply(&UID, &cookies, &S2C);
        assert_eq!(client_reply(&reply, &UID, &S2C).unwrap(), cookies);
        // Another request's reply.
        assert_eq!(client_reply(&reply, &[9; 32], &S2C), Err(NtsError::NotOurs));
        // Keys that are not ours.
        assert_eq!(
            client_reply(&reply, &UID, &C2S),
            Err(NtsError::Unauthenticated)
        );
        // On-path: the transmit timestamp moved on by 5 s, the MAC left as it was.
        let mut forged = reply.clone();
        forged[40] = forged[40].wrapping_add(5);
        assert_eq!(
            client_reply(&forged, &UID, &S2C),
            Err(NtsError::Unauthenticated)
        );
        // The authenticator stripped: the packet is a plain NTP reply.
        let stripped = reply[..HEADER_LEN + 36].to_vec();
        assert_eq!(
            client_reply(&stripped, &UID, &S2C),
            Err(NtsError::Unauthenticated)
        );
        // Something appended after the authenticator.
        let mut appended = reply.clone();
        put_extension(&mut appended, EF_COOKIE, &[1; 12]);
        assert!(matches!(
            client_reply(&appended, &UID, &S2C),
            Err(NtsError::Malformed(_))
        ));
    }

    /// The cookie a request carried and how many placeholders it had.
    fn cookie_and_placeholders(packet: &[u8]) -> (Vec<u8>, usize) {
        let fields = extensions(packet).unwrap();
        let cookie = fields.iter().find(|f| f.kind == EF_COOKIE).unwrap();
        let placeholders = fields
            .iter()
            .filter(|f| f.kind == EF_COOKIE_PLACEHOLDER)
            .count();
        (packet[cookie.value.clone()].to_vec(), placeholders)
    }

    #[test]
    fn a_session_spends_each_cookie_once_and_refills_from_authentic_replies() {
        let header = [0x23; HEADER_LEN];
        let cookies: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 100]).collect();
        let mut session = ClientSession::new(C2S, S2C, cookies);
        assert_eq!(session.cookies(), 8);
        // With a full jar, one cookie back is enough: no placeholder.
        let first = session.request(&header, UID, &NONCE).unwrap();
        assert_eq!(cookie_and_placeholders(&first), (vec![0; 100], 0));
        assert_eq!(session.cookies(), 7);
        // Unanswered requests: each asks for the ones lost before it.
        let second = session.request(&header, [8; 32], &NONCE).unwrap();
        assert_eq!(cookie_and_placeholders(&second), (vec![1; 100], 1));
        // The first request's reply is no longer awaited: only the latest is.
        assert_eq!(
            session.reply(&server_reply(&UID, &[vec![9; 100]], &S2C)),
            Err(NtsError::NotOurs)
        );
        // A forged reply to the latest leaves it awaited; the genuine one is then taken.
        let genuine = server_reply(&[8; 32], &[vec![10; 100], vec![11; 100]], &S2C);
        let mut forged = genuine.clone();
        forged[40] ^= 5;
        assert_eq!(session.reply(&forged), Err(NtsError::Unauthenticated));
        assert_eq!(session.reply(&genuine), Ok(ReplyOutcome::Authentic));
        assert_eq!(session.cookies(), 8);
        // Replayed: the identifier is spent.
        assert_eq!(session.reply(&genuine), Err(NtsError::NotOurs));
        // The new cookies are spent after the old ones, and the jar never holds more than 8.
        for expected in 2..8u8 {
            let request = session.request(&header, UID, &NONCE).unwrap();
            assert_eq!(cookie_and_placeholders(&request).0, vec![expected; 100]);
        }
        let request = session.request(&header, UID, &NONCE).unwrap();
        assert_eq!(cookie_and_placeholders(&request), (vec![10; 100], 6));
        session.request(&header, UID, &NONCE).unwrap();
        assert_eq!(
            session.request(&header, UID, &NONCE),
            None,
            "the jar is empty"
        );
    }

    #[test]
    fn an_nts_nak_asks_for_a_key_exchange_unless_an_authentic_reply_follows() {
        let header = [0x23; HEADER_LEN];
        let nak_for = |uid: &[u8]| {
            // A kiss NTSN: mode 4, stratum 0, reference id "NTSN", the identifier, no
            // authenticator.
            let mut nak = vec![0x24; HEADER_LEN];
            nak[1] = 0;
            nak[12..16].copy_from_slice(b"NTSN");
            put_extension(&mut nak, EF_UNIQUE_IDENTIFIER, uid);
            nak
        };
        let mut session = ClientSession::new(C2S, S2C, vec![vec![1; 100]; 4]);
        session.request(&header, UID, &NONCE).unwrap();
        assert_eq!(
            session.reply(&nak_for(&[9; 32])),
            Err(NtsError::NotOurs),
            "another request's"
        );
        // The identifier must match whole, not as a prefix.
        assert_eq!(session.reply(&nak_for(&[4; 36])), Err(NtsError::NotOurs));
        assert_eq!(session.reply(&nak_for(&UID)), Ok(ReplyOutcome::Nak));
        // Spoofed or not, it changes nothing yet: the genuine reply is still taken...
        let genuine = server_reply(&UID, &[vec![10; 100]], &S2C);
        assert_eq!(session.reply(&genuine), Ok(ReplyOutcome::Authentic));
        assert_eq!(session.cookies(), 4);
        assert!(session.request(&header, UID, &NONCE).is_some());
        // ...and without one before the next poll, that poll is a key exchange.
        assert_eq!(session.reply(&nak_for(&UID)), Ok(ReplyOutcome::Nak));
        assert_eq!(session.request(&header, UID, &NONCE), None);
        assert_eq!(session.cookies(), 3, "the cookies are kept");
        // Any other unauthenticated kiss, or a NAK in a client's packet, is refused.
        let mut session = ClientSession::new(C2S, S2C, vec![vec![1; 100]; 4]);
        session.request(&header, UID, &NONCE).unwrap();
        let mut rate = nak_for(&UID);
        rate[12..16].copy_from_slice(b"RATE");
        assert_eq!(session.reply(&rate), Err(NtsError::Unauthenticated));
        let mut from_a_client = nak_for(&UID);
        from_a_client[0] = 0x23;
        assert_eq!(
            session.reply(&from_a_client),
            Err(NtsError::Unauthenticated)
        );
        assert_eq!(session.cookies(), 3);
    }

    #[test]
    fn cookies_longer_than_256_bytes_are_refused_at_the_exchange_and_dropped_after() {
        let mut records = server_answer(&[]);
        records.insert(2, KeRecord::NewCookie(vec![0; MAX_COOKIE_LEN + 1]));
        assert_eq!(
            client_outcome(&records),
            Err(KeError::Refused(
                "the server sent a 257-byte cookie (at most 256 are taken)".into()
            ))
        );
        let header = [0x23; HEADER_LEN];
        let mut session = ClientSession::new(C2S, S2C, vec![vec![1; 100]]);
        session.request(&header, UID, &NONCE).unwrap();
        let reply = server_reply(&UID, &[vec![2; 100], vec![3; MAX_COOKIE_LEN + 1]], &S2C);
        assert_eq!(session.reply(&reply), Ok(ReplyOutcome::Authentic));
        assert_eq!(session.cookies(), 1);
    }

    #[test]
    fn key_exchanges_back_off_from_16_s_to_1024_s() {
        let waits: Vec<u64> = (0..9).map(key_exchange_backoff_s).collect();
        assert_eq!(waits, [16, 16, 32, 64, 128, 256, 512, 1024, 1024]);
    }

    #[test]
    fn broken_extension_fields_are_named_not_trusted() {
        let reply = server_reply(&UID, &[vec![5; 100]], &S2C);
        for cut in HEADER_LEN + 1..reply.len() {
            assert!(
                client_reply(&reply[..cut], &UID, &S2C).is_err(),
                "cut {cut}"
            );
        }
        let mut bad_len = reply.clone();
        bad_len[HEADER_LEN + 3] = 6; // Not a multiple of 4.
        let err = extensions(&bad_len).unwrap_err().to_string();
        assert!(err.contains("has length 6"), "{err}");
    }

    #[test]
    fn extension_fields_are_padded_to_four_and_at_least_sixteen_bytes() {
        let mut out = Vec::new();
        put_extension(&mut out, 0x1234, &[1, 2, 3]);
        assert_eq!(out.len(), 16);
        put_extension(&mut out, 0x1234, &[1; 13]);
        assert_eq!(out.len(), 16 + 20);
    }
}
