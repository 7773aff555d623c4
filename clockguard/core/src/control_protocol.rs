//! The control socket's requests: one JSON object per line, parsed here and nowhere else.
//! Fuzzed by fuzz/fuzz_targets/control_request.rs.

use serde::Deserialize;

/// A request line longer than this is refused (no unbounded buffering).
pub const MAX_REQUEST: usize = 4096;

#[derive(Debug, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    Status {},
    Events {
        #[serde(default)]
        follow: bool,
    },
    Tracking {},
    Sources {},
    Services {},
    /// The clock error bound now (`clockguard now`).
    Now {},
    Reload {},
}

impl Request {
    pub fn name(&self) -> &'static str {
        match self {
            Request::Status {} => "status",
            Request::Events { .. } => "events",
            Request::Tracking {} => "tracking",
            Request::Sources {} => "sources",
            Request::Services {} => "services",
            Request::Now {} => "now",
            Request::Reload {} => "reload",
        }
    }

    /// Whether the request changes the daemon (root only).
    pub fn changes_the_daemon(&self) -> bool {
        matches!(self, Request::Reload {})
    }
}

/// The request line in what a client sent: the bytes up to its first newline, read at
/// most [`MAX_REQUEST`] + 1 bytes far (a client that closes without a newline sent the
/// line it sent), or what is wrong with them, for the `{"error": ...}` answer.
pub fn request_line(bytes: &[u8]) -> Result<&str, String> {
    let line = match bytes.iter().position(|&b| b == b'\n') {
        Some(end) => &bytes[..end],
        None => bytes,
    };
    if line.len() > MAX_REQUEST {
        return Err(format!("request longer than {MAX_REQUEST} bytes"));
    }
    std::str::from_utf8(line).map_err(|e| {
        format!(
            "bad request: not UTF-8 (an invalid byte at offset {})",
            e.valid_up_to()
        )
    })
}

/// One request line, or what is wrong with it (for the `{"error": ...}` answer).
pub fn parse_request(line: &str) -> Result<Request, String> {
    if line.len() > MAX_REQUEST {
        return Err(format!("request longer than {MAX_REQUEST} bytes"));
    }
    let line = line.trim();
    if line.is_empty() {
        return Err("empty request".into());
    }
    serde_json::from_str(line).map_err(|e| format!("bad request: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_line_is_framed_by_its_newline_and_its_length() {
        assert_eq!(
            request_line(b"{\"cmd\":\"status\"}\n"),
            Ok("{\"cmd\":\"status\"}")
        );
        // Closed without a newline: what came is the line.
        assert_eq!(request_line(b"{\"cmd\":\"now\"}"), Ok("{\"cmd\":\"now\"}"));
        // Only the first line counts.
        assert_eq!(request_line(b"a\nb\n"), Ok("a"));
        let long = vec![b' '; MAX_REQUEST + 1];
        assert_eq!(
            request_line(&long),
            Err("request longer than 4096 bytes".to_string())
        );
        let mut longest = vec![b' '; MAX_REQUEST];
        longest.push(b'\n');
        assert!(request_line(&longest).is_ok());
        assert_eq!(
            request_line(b"{\"cmd\xff\n"),
            Err("bad request: not UTF-8 (an invalid byte at offset 5)".to_string())
        );
    }

    #[test]
    fn requests_parse_and_bad_ones_say_why() {
        assert!(matches!(
            parse_request("{\"cmd\":\"status\"}\n"),
            Ok(Request::Status {})
        ));
        assert!(matches!(
            parse_request("{\"cmd\":\"events\",\"follow\":true}"),
            Ok(Request::Events { follow: true })
        ));
        assert!(matches!(
            parse_request("{\"cmd\":\"tracking\"}"),
            Ok(Request::Tracking {})
        ));
        assert!(matches!(
            parse_request("{\"cmd\":\"services\"}"),
            Ok(Request::Services {})
        ));
        assert!(matches!(
            parse_request("{\"cmd\":\"now\"}"),
            Ok(Request::Now {})
        ));
        assert!(parse_request("{\"cmd\":\"reboot\"}")
            .unwrap_err()
            .contains("reboot"));
        assert!(parse_request("").unwrap_err().contains("empty"));
        assert!(parse_request(&"x".repeat(5000))
            .unwrap_err()
            .contains("longer"));
        assert!(parse_request("{\"cmd\":\"status\",\"x\":1}").is_err());
        let reload = parse_request("{\"cmd\":\"reload\"}").unwrap();
        assert!(reload.changes_the_daemon());
        assert!(!Request::Status {}.changes_the_daemon());
    }
}
