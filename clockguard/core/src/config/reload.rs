//! What a reload of the configuration applies at once, and what waits for a restart.

use serde::{Deserialize, Serialize};

use super::*;

/// What a reload does with a new configuration: the changed keys (`section.key`, or `key`
/// at the top level) it applies at once, and those that wait for a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadPlan {
    pub applied: Vec<String>,
    pub needs_restart: Vec<String>,
}

impl ReloadPlan {
    /// The configuration keys a reload applies at once: the guard's policy.
    pub const RELOADABLE: &'static [&'static str] = &[
        "guard.allow",
        "guard.slew_instead",
        "guard.exclusive_discipline",
    ];

    pub fn between(old: &Config, new: &Config) -> ReloadPlan {
        let (applied, needs_restart) = changed_keys(old, new)
            .into_iter()
            .partition(|key| Self::RELOADABLE.contains(&key.as_str()));
        ReloadPlan {
            applied,
            needs_restart,
        }
    }
}

/// The keys whose values differ, compared as the configuration serialises: every table's
/// keys one by one, anything else (the `[[service]]` list) as a whole.
fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    use serde_json::Value;
    let (Ok(Value::Object(old)), Ok(Value::Object(new))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return vec!["(configuration)".into()];
    };
    let mut changed = Vec::new();
    for (key, before) in &old {
        let after = &new[key];
        match (before, after) {
            (Value::Object(before), Value::Object(after)) => {
                for (inner, value) in before {
                    if after.get(inner) != Some(value) {
                        changed.push(format!("{key}.{inner}"));
                    }
                }
            }
            _ if before != after => changed.push(key.clone()),
            _ => {}
        }
    }
    changed
}
