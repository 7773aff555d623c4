//! The contract with a tracked service's notify command: the event it is run for, in
//! CLOCKGUARD_* environment variables (the README lists them under the failover).
//! A value not known is empty, not absent; the CLOCKGUARD_JUMP_{SEQ,PID,COMM,EXE} variables
//! are set only when a time jump explains the event.

use serde_json::Value;

use crate::record::Record;

/// The event in CLOCKGUARD_* variables for `service`'s notify command: the service record
/// (`kind` died, probe_failed, ...) and, when a time jump explains it (`detail.jump`), who
/// made that jump.
pub fn notify_env(service: &str, record: &Record) -> Vec<(String, String)> {
    let jump = record
        .detail
        .as_ref()
        .and_then(|d| d.get("jump"))
        .filter(|j| !j.is_null());
    let mut env = vec![
        ("CLOCKGUARD_SERVICE", service.to_string()),
        ("CLOCKGUARD_EVENT", record.kind.clone()),
        ("CLOCKGUARD_VERDICT", record.verdict.to_string()),
        ("CLOCKGUARD_RESULT", record.result.clone()),
        ("CLOCKGUARD_TIME", record.time.clone()),
        (
            "CLOCKGUARD_PID",
            record.pid.map(|p| p.to_string()).unwrap_or_default(),
        ),
        ("CLOCKGUARD_COMM", record.comm.clone().unwrap_or_default()),
        ("CLOCKGUARD_EXE", record.exe.clone().unwrap_or_default()),
        (
            "CLOCKGUARD_JUMP_CAUSE",
            record.cause.clone().unwrap_or_default(),
        ),
        (
            "CLOCKGUARD_JUMP_DELTA_NS",
            record.delta_ns.map(|d| d.to_string()).unwrap_or_default(),
        ),
    ];
    if let Some(jump) = jump {
        env.push(("CLOCKGUARD_JUMP_SEQ", text(jump.get("seq"))));
        env.push(("CLOCKGUARD_JUMP_PID", text(jump.get("pid"))));
        env.push(("CLOCKGUARD_JUMP_COMM", text(jump.get("comm"))));
        env.push(("CLOCKGUARD_JUMP_EXE", text(jump.get("exe"))));
    }
    env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// A JSON value as a variable's text: strings bare, null and absent empty.
fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::record::{Source, Verdict};

    fn get<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
        env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_death_explained_by_a_step_names_the_service_and_who_stepped() {
        let record = Record {
            time: "2026-12-05T10:00:00.000000001Z".into(),
            source: Source::Service,
            kind: "died_from_time_jump".into(),
            result: "killed by SIGTERM".into(),
            verdict: Verdict::Fault,
            pid: Some(812),
            comm: Some("imap".into()),
            exe: Some("/usr/lib/dovecot/imap".into()),
            cause: Some("step".into()),
            delta_ns: Some(-10_000_000_000),
            detail: Some(json!({
                "jump": {"seq": 41, "pid": 900, "comm": "date", "exe": "/usr/bin/date"}
            })),
            ..Default::default()
        };
        let env = notify_env("dovecot", &record);
        let expect = [
            ("CLOCKGUARD_SERVICE", "dovecot"),
            ("CLOCKGUARD_EVENT", "died_from_time_jump"),
            ("CLOCKGUARD_VERDICT", "fault"),
            ("CLOCKGUARD_RESULT", "killed by SIGTERM"),
            ("CLOCKGUARD_TIME", "2026-12-05T10:00:00.000000001Z"),
            ("CLOCKGUARD_PID", "812"),
            ("CLOCKGUARD_COMM", "imap"),
            ("CLOCKGUARD_EXE", "/usr/lib/dovecot/imap"),
            ("CLOCKGUARD_JUMP_CAUSE", "step"),
            ("CLOCKGUARD_JUMP_DELTA_NS", "-10000000000"),
            ("CLOCKGUARD_JUMP_SEQ", "41"),
            ("CLOCKGUARD_JUMP_PID", "900"),
            ("CLOCKGUARD_JUMP_COMM", "date"),
            ("CLOCKGUARD_JUMP_EXE", "/usr/bin/date"),
        ];
        assert_eq!(env.len(), expect.len());
        for (key, value) in expect {
            assert_eq!(get(&env, key), Some(value), "{key}");
        }
    }

    #[test]
    fn unknowns_are_empty_and_the_jump_variables_only_come_with_a_jump() {
        for detail in [
            None,
            Some(json!({"jump": null})),
            Some(json!({"probe": "x"})),
        ] {
            let record = Record {
                source: Source::Service,
                kind: "died".into(),
                result: "exit status 1".into(),
                detail,
                ..Default::default()
            };
            let env = notify_env("web", &record);
            assert_eq!(get(&env, "CLOCKGUARD_PID"), Some(""));
            assert_eq!(get(&env, "CLOCKGUARD_JUMP_CAUSE"), Some(""));
            assert_eq!(get(&env, "CLOCKGUARD_JUMP_SEQ"), None);
            assert_eq!(get(&env, "CLOCKGUARD_VERDICT"), Some("observed"));
        }
        // A jump whose process is gone: its fields are empty, not "null".
        let record = Record {
            detail: Some(json!({"jump": {"seq": 7, "pid": null}})),
            ..Default::default()
        };
        let env = notify_env("web", &record);
        assert_eq!(get(&env, "CLOCKGUARD_JUMP_SEQ"), Some("7"));
        assert_eq!(get(&env, "CLOCKGUARD_JUMP_PID"), Some(""));
        assert_eq!(get(&env, "CLOCKGUARD_JUMP_COMM"), Some(""));
    }
}
