//! Command-line options: `--name value` pairs and positional arguments.

use super::*;

/// `--name value` options (each at most once) and positional arguments.
pub(crate) struct Opts {
    pub(crate) values: Vec<(String, String)>,
    pub(crate) positional: Vec<String>,
}

impl Opts {
    pub(crate) fn parse(
        args: &[String],
        known: &[&str],
        positional: usize,
    ) -> Result<Opts, String> {
        let mut values: Vec<(String, String)> = Vec::new();
        let mut pos = Vec::new();
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            if arg.starts_with("--") {
                if !known.contains(&arg.as_str()) {
                    return Err(format!("unknown option {arg}\n{USAGE}"));
                }
                let value = iter.next().ok_or(format!("{arg} needs a value"))?;
                if values.iter().any(|(k, _)| k == arg) {
                    return Err(format!("{arg} given twice"));
                }
                values.push((arg.clone(), value.clone()));
            } else {
                pos.push(arg.clone());
            }
        }
        if pos.len() != positional {
            return Err(format!(
                "expected {positional} positional argument(s), got {}\n{USAGE}",
                pos.len()
            ));
        }
        Ok(Opts {
            values,
            positional: pos,
        })
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn required(&self, name: &str) -> Result<&str, String> {
        self.get(name).ok_or(format!("missing {name}"))
    }

    /// Parses `name`'s value, or returns `default` when it is absent.
    pub(crate) fn parsed<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e| format!("{name} {v:?}: {e}")),
        }
    }
}

pub(crate) fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("address {addr:?}: {e}"))?
        .next()
        .ok_or(format!("address {addr:?}: nothing to connect to"))
}

/// Seconds (decimal, may be negative) to ns, rounded.
pub(crate) fn seconds_to_ns(name: &str, text: &str) -> Result<i64, String> {
    let s: f64 = text.parse().map_err(|e| format!("{name} {text:?}: {e}"))?;
    let ns = (s * 1e9).round();
    if !ns.is_finite() || ns.abs() > 1e18 {
        return Err(format!("{name} {text:?}: out of range"));
    }
    Ok(ns as i64)
}
