//! Kernel function names for a few addresses (late timers' callbacks, in-kernel stacks),
//! from /proc/kallsyms in one streaming pass per batch. The whole table would cost the
//! daemon about 10 MB of memory for a handful of names; only the answers are kept.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    path::PathBuf,
};

/// Answers kept; beyond this the cache starts over (addresses repeat: the same timers).
const CACHE_MAX: usize = 4096;
/// A symbol further than this below an address does not name it (the address lies in
/// memory kallsyms does not describe).
const MAX_DISTANCE: u64 = 1 << 20;

/// A kernel symbol: its start address and name ("tick_sched_timer",
/// "watchdog_timer_expired [watchdog]" for a module's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    pub start: u64,
    pub name: String,
}

/// For each address in `wanted`, the symbol with the highest start at or below it.
pub fn nearest_symbols(kallsyms: impl BufRead, wanted: &[u64]) -> HashMap<u64, Symbol> {
    let mut best: HashMap<u64, Symbol> = HashMap::new();
    for line in kallsyms.lines().map_while(Result::ok) {
        let mut fields = line.split_whitespace();
        let (Some(addr), Some(_kind), Some(name)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Ok(start) = u64::from_str_radix(addr, 16) else {
            continue;
        };
        // Without CAP_SYSLOG every address reads 0: nothing can be named.
        if start == 0 {
            continue;
        }
        for &address in wanted {
            if start > address || address - start >= MAX_DISTANCE {
                continue;
            }
            if best.get(&address).is_some_and(|b| b.start >= start) {
                continue;
            }
            let name = match fields.clone().next() {
                Some(module) => format!("{name} {module}"),
                None => name.to_string(),
            };
            best.insert(address, Symbol { start, name });
        }
    }
    best
}

pub struct KernelSymbols {
    path: PathBuf,
    cache: HashMap<u64, Option<Symbol>>,
}

impl Default for KernelSymbols {
    fn default() -> Self {
        KernelSymbols {
            path: PathBuf::from("/proc/kallsyms"),
            cache: HashMap::new(),
        }
    }
}

impl KernelSymbols {
    /// The symbols of `addresses` (None where none is known), reading kallsyms once for
    /// all the addresses not seen before.
    pub fn lookup(&mut self, addresses: &[u64]) -> Vec<Option<Symbol>> {
        let mut unknown: Vec<u64> = addresses
            .iter()
            .copied()
            .filter(|a| !self.cache.contains_key(a))
            .collect();
        unknown.sort_unstable();
        unknown.dedup();
        if !unknown.is_empty() {
            if self.cache.len() + unknown.len() > CACHE_MAX {
                self.cache.clear();
            }
            let mut found = match std::fs::File::open(&self.path) {
                Ok(file) => nearest_symbols(BufReader::new(file), &unknown),
                Err(_) => HashMap::new(),
            };
            for address in unknown {
                self.cache.insert(address, found.remove(&address));
            }
        }
        addresses
            .iter()
            .map(|a| self.cache.get(a).cloned().flatten())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KALLSYMS: &str = "\
ffffffff81000000 T _stext
ffffffff81100000 t tick_sched_timer
ffffffff81100400 T hrtimer_wakeup
ffffffffc0201000 t watchdog_timer_expired\t[watchdog]
0000000000000000 A fixed_percpu_data
";

    #[test]
    fn nearest_symbol_at_or_below() {
        let found = nearest_symbols(
            KALLSYMS.as_bytes(),
            &[
                0xffff_ffff_8110_0010,
                0xffff_ffff_8110_0400,
                0xffff_ffff_c020_1020,
                0x1000,
            ],
        );
        assert_eq!(found[&0xffff_ffff_8110_0010].name, "tick_sched_timer");
        assert_eq!(found[&0xffff_ffff_8110_0400].name, "hrtimer_wakeup");
        assert_eq!(
            found[&0xffff_ffff_c020_1020].name,
            "watchdog_timer_expired [watchdog]"
        );
        assert_eq!(found[&0xffff_ffff_c020_1020].start, 0xffff_ffff_c020_1000);
        assert!(!found.contains_key(&0x1000), "below every symbol");
    }

    #[test]
    fn far_from_any_symbol_is_unnamed() {
        let found = nearest_symbols(KALLSYMS.as_bytes(), &[0xffff_ffff_9000_0000]);
        assert!(found.is_empty());
    }

    #[test]
    fn lookups_are_cached_per_address() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kallsyms");
        std::fs::write(&path, KALLSYMS).unwrap();
        let mut symbols = KernelSymbols {
            path: path.clone(),
            cache: HashMap::new(),
        };
        let first = symbols.lookup(&[0xffff_ffff_8110_0010, 0x5]);
        assert_eq!(first[0].as_ref().unwrap().name, "tick_sched_timer");
        assert_eq!(first[1], None);
        // Answered from the cache even once the file is gone.
        std::fs::remove_file(&path).unwrap();
        let again = symbols.lookup(&[0xffff_ffff_8110_0010]);
        assert_eq!(again[0].as_ref().unwrap().name, "tick_sched_timer");
    }
}
