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
