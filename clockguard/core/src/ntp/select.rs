//! Source selection (RFC 5905 §11.2.1, Marzullo's intersection with a majority rule) and
//! combining: which sources agree on the time, and the time they agree on.
//!
//! Offsets here are the server's time minus the local timescale, s; they only need to be
//! comparable between sources (all measured against the same CLOCK_MONOTONIC_RAW-based
//! timescale and brought to the same instant by the caller).

/// One source as selection sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    /// Offset of the source at the common instant, s.
    pub offset_s: f64,
    /// Root distance: the half-width of the interval the true time must lie in, s.
    pub distance_s: f64,
    /// Statistical error of `offset_s` (jitter), s: the weight used for combining.
    pub jitter_s: f64,
}

/// The outcome of a selection round.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    /// Indices (into the candidate slice) of the sources whose interval overlaps the
    /// intersection: the truechimers.
    pub truechimers: Vec<usize>,
    /// Indices of the falsetickers.
    pub falsetickers: Vec<usize>,
    /// The index of the system peer: the truechimer with the smallest distance.
    pub system_peer: usize,
    /// The combined offset of the truechimers, s (weighted by 1 / (distance + jitter)).
    pub offset_s: f64,
    /// The intersection interval (lower, upper), s.
    pub interval: (f64, f64),
}

/// Why no source could be selected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoSelection {
    NoCandidates,
    /// No interval is shared by more than half of the sources (`n` sources in all).
    NoMajority {
        n: usize,
    },
}

impl std::fmt::Display for NoSelection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoSelection::NoCandidates => write!(f, "no usable source"),
            NoSelection::NoMajority { n } => {
                write!(f, "no majority: the {n} sources do not agree on the time")
            }
        }
    }
}

/// Marzullo's algorithm as RFC 5905 states it: the smallest number of falsetickers `f`
/// (f < n/2) for which an interval is contained in at least n − f correctness intervals;
/// the truechimers are the sources whose interval overlaps it.
pub fn select(candidates: &[Candidate]) -> Result<Selection, NoSelection> {
    let n = candidates.len();
    if n == 0 {
        return Err(NoSelection::NoCandidates);
    }
    // Endpoints: (value, type) with type −1 = lower end, +1 = upper end; sorting by value
    // then type puts a lower end before an upper end at the same value, so touching
    // intervals count as overlapping.
    let mut edges: Vec<(f64, i32)> = Vec::with_capacity(2 * n);
    for c in candidates {
        let half = c.distance_s.abs();
        edges.push((c.offset_s - half, -1));
        edges.push((c.offset_s + half, 1));
    }
    edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));

    for allowed in 0..n.div_ceil(2) {
        let needed = (n - allowed) as i32;
        let mut low = None;
        let mut count = 0;
        for &(value, kind) in &edges {
            count -= kind;
            if count >= needed {
                low = Some(value);
                break;
            }
        }
        let mut high = None;
        count = 0;
        for &(value, kind) in edges.iter().rev() {
            count += kind;
            if count >= needed {
                high = Some(value);
                break;
            }
        }
        let (Some(low), Some(high)) = (low, high) else {
            continue;
        };
        if low > high {
            continue;
        }
        let (truechimers, falsetickers): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| {
            let c = &candidates[i];
            let half = c.distance_s.abs();
            c.offset_s - half <= high && c.offset_s + half >= low
        });
        // More than half of all sources must be truechimers (the majority rule).
        if truechimers.len() * 2 <= n {
            continue;
        }
        let system_peer = *truechimers
            .iter()
            .min_by(|&&a, &&b| {
                candidates[a]
                    .distance_s
                    .total_cmp(&candidates[b].distance_s)
            })
            .expect("a majority is not empty");
        let (mut sum, mut weights) = (0.0, 0.0);
        for &i in &truechimers {
            let c = &candidates[i];
            let weight = 1.0 / (c.distance_s.abs() + c.jitter_s.abs()).max(1e-9);
            sum += c.offset_s * weight;
            weights += weight;
        }
        return Ok(Selection {
            truechimers,
            falsetickers,
            system_peer,
            offset_s: sum / weights,
            interval: (low, high),
        });
    }
    Err(NoSelection::NoMajority { n })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(offset_s: f64, distance_s: f64) -> Candidate {
        Candidate {
            offset_s,
            distance_s,
            jitter_s: 0.0,
        }
    }

    #[test]
    fn nothing_to_select() {
        assert_eq!(select(&[]), Err(NoSelection::NoCandidates));
    }

    #[test]
    fn a_single_source_is_selected() {
        let s = select(&[c(11.0, 0.01)]).unwrap();
        assert_eq!(s.truechimers, vec![0]);
        assert_eq!(s.system_peer, 0);
        assert!((s.offset_s - 11.0).abs() < 1e-12);
    }

    #[test]
    fn a_falseticker_is_rejected_by_the_majority() {
        // Three agree around +1 ms, one is 5 s off.
        let cands = [
            c(0.001, 0.002),
            c(0.0012, 0.001),
            c(5.0, 0.002),
            c(0.0008, 0.003),
        ];
        let s = select(&cands).unwrap();
        assert_eq!(s.falsetickers, vec![2]);
        assert_eq!(s.truechimers, vec![0, 1, 3]);
        assert_eq!(s.system_peer, 1, "smallest distance");
        assert!((s.offset_s - 0.001).abs() < 0.0005, "{}", s.offset_s);
        assert!(s.interval.0 <= 0.0012 && s.interval.1 >= 0.0008);
    }

    #[test]
    fn two_sources_that_disagree_have_no_majority() {
        let err = select(&[c(0.0, 0.001), c(1.0, 0.001)]).unwrap_err();
        assert_eq!(err, NoSelection::NoMajority { n: 2 });
        assert!(err.to_string().contains("2 sources"));
    }

    #[test]
    fn two_falsetickers_out_of_five() {
        let cands = [
            c(-3.0, 0.01),
            c(0.0, 0.01),
            c(0.002, 0.01),
            c(7.0, 0.01),
            c(-0.001, 0.01),
        ];
        let s = select(&cands).unwrap();
        assert_eq!(s.truechimers, vec![1, 2, 4]);
        assert_eq!(s.falsetickers, vec![0, 3]);
    }

    #[test]
    fn combining_weighs_by_distance() {
        // Overlapping; the tight source dominates the combined offset.
        let s = select(&[c(0.0, 0.0001), c(0.009, 0.01)]).unwrap();
        assert_eq!(s.truechimers.len(), 2);
        assert!(s.offset_s < 0.001, "{}", s.offset_s);
    }
}
