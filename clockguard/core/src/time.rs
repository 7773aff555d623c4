//! Instants typed by the clock they were read on. clockguard reads three clocks that
//! run at different rates and jump differently: CLOCK_MONOTONIC_RAW (the oscillator, never
//! adjusted: what slews and NTP samples are measured against), CLOCK_MONOTONIC (slewed
//! with the system clock, never stepped: kernel event times) and CLOCK_REALTIME (the
//! clock being guarded). Mixing them up is a bug of up to a boot's worth of seconds that
//! no unit says; with one type per clock the compiler refuses it. Durations stay signed
//! ns (`i64`), because a difference between two readings of one clock has no clock left.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! clock_instant {
    ($(#[$doc:meta])* $name:ident, $clock:literal) => {
        $(#[$doc])*
        ///
        /// Serialised as its ns (an integer), as the files and answers that carry one did
        /// before it was typed.
        #[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(i64);

        impl $name {
            /// The instant `ns` nanoseconds after the clock's zero.
            pub const fn from_ns(ns: i64) -> Self {
                Self(ns)
            }

            /// ns since the clock's zero.
            pub const fn ns(self) -> i64 {
                self.0
            }

            /// The instant `ns` later (earlier when negative), saturating.
            #[must_use]
            pub const fn plus_ns(self, ns: i64) -> Self {
                Self(self.0.saturating_add(ns))
            }

            /// ns from `earlier` to this instant (negative when `earlier` is later),
            /// saturating.
            pub const fn ns_since(self, earlier: Self) -> i64 {
                self.0.saturating_sub(earlier.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($clock, " {} ns"), self.0)
            }
        }
    };
}

clock_instant!(
    /// A CLOCK_MONOTONIC_RAW instant.
    Raw,
    "CLOCK_MONOTONIC_RAW"
);
clock_instant!(
    /// A CLOCK_MONOTONIC instant.
    Monotonic,
    "CLOCK_MONOTONIC"
);
clock_instant!(
    /// A CLOCK_REALTIME instant (ns since the Unix epoch).
    Realtime,
    "CLOCK_REALTIME"
);

impl Monotonic {
    /// This instant on CLOCK_REALTIME, given CLOCK_REALTIME − CLOCK_MONOTONIC as measured
    /// now, ns: exact unless the realtime clock was stepped or slewed in between (it is
    /// how an event the kernel dated on CLOCK_MONOTONIC gets its journal `time`).
    #[must_use]
    pub const fn on_realtime(self, realtime_minus_monotonic_ns: i64) -> Realtime {
        Realtime::from_ns(self.0.saturating_add(realtime_minus_monotonic_ns))
    }
}

/// CLOCK_MONOTONIC_RAW and CLOCK_REALTIME read back to back: what a slew and an NTP
/// estimate are measured on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    pub raw: Raw,
    pub realtime: Realtime,
}

impl Reading {
    /// CLOCK_REALTIME − CLOCK_MONOTONIC_RAW at this reading, ns.
    pub const fn realtime_minus_raw_ns(self) -> i64 {
        self.realtime.ns().saturating_sub(self.raw.ns())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_add_and_subtract_in_ns_on_their_own_clock() {
        let start = Raw::from_ns(1_000);
        let later = start.plus_ns(250);
        assert_eq!(later.ns(), 1_250);
        assert_eq!(later.ns_since(start), 250);
        assert_eq!(start.ns_since(later), -250);
        assert!(start < later);
        assert_eq!(Raw::from_ns(i64::MAX).plus_ns(1).ns(), i64::MAX);
        assert_eq!(format!("{start:?}"), "CLOCK_MONOTONIC_RAW 1000 ns");
        let reading = Reading {
            raw: Raw::from_ns(5),
            realtime: Realtime::from_ns(1_700_000_000_000_000_005),
        };
        assert_eq!(reading.realtime_minus_raw_ns(), 1_700_000_000_000_000_000);
    }
}
