//! Which journaled records count as a time jump, and which may explain a tracked service's
//! death: the rules behind the `jumps` counters, the metrics and the failover.

use crate::record::{Record, Source, Verdict};

/// Why a journaled record counts as a time jump (for the metrics and the failover), or
/// None: a step that really moved the clock (`step`), an in-kernel one (`kernel`: leap
/// second, RTC sleep-time injection), one no hook explained (`unexplained`), and the
/// timers' findings by cause (`vm_paused`, `suspend`, ...). A refused step moved nothing:
/// it is not one.
pub fn jump_cause(record: &Record) -> Option<String> {
    let moved = record.delta_ns.is_some_and(|d| d != 0);
    match record.source {
        Source::Timers if record.kind == "stall" => record.cause.clone(),
        // A switch or the watchdog's verdict moves no clock by itself.
        Source::Timers
            if !matches!(
                record.kind.as_str(),
                "clocksource_change" | "clocksource_unstable"
            ) =>
        {
            Some(record.kind.clone())
        }
        Source::Fallback => Some("unexplained".into()),
        Source::Kernel if moved => Some("kernel".into()),
        Source::Syscall if record.kind == "step" && moved => Some("step".into()),
        _ => None,
    }
}

/// Why a journaled record may explain a tracked service's death: a time jump, or a
/// refused step (the guard stopped it, but whatever it asked for may still be slewed in).
pub fn service_trigger(record: &Record) -> Option<String> {
    jump_cause(record).or_else(|| {
        let refused = record.source == Source::Syscall
            && record.kind == "step"
            && matches!(record.verdict, Verdict::Denied | Verdict::Slewed);
        refused.then(|| "refused_step".to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(source: Source, kind: &str) -> Record {
        Record {
            source,
            kind: kind.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_step_is_a_jump_only_when_the_clock_moved() {
        let mut step = record(Source::Syscall, "step");
        assert_eq!(jump_cause(&step), None, "unmeasured");
        step.delta_ns = Some(0);
        assert_eq!(
            jump_cause(&step),
            None,
            "EINVAL, or a step to the same time"
        );
        step.delta_ns = Some(-3_000_000_000);
        assert_eq!(jump_cause(&step).as_deref(), Some("step"));
        // A slew or frequency change moves the clock's rate, not the clock.
        let mut slew = record(Source::Syscall, "slew");
        slew.delta_ns = Some(5);
        assert_eq!(jump_cause(&slew), None);
    }

    #[test]
    fn kernel_and_unexplained_jumps() {
        let mut leap = record(Source::Kernel, "step");
        assert_eq!(jump_cause(&leap), None);
        leap.delta_ns = Some(-1_000_000_000);
        assert_eq!(jump_cause(&leap).as_deref(), Some("kernel"));
        assert_eq!(
            jump_cause(&record(Source::Fallback, "step")).as_deref(),
            Some("unexplained")
        );
    }

    #[test]
    fn the_timers_findings_count_by_cause_but_clocksource_verdicts_do_not() {
        let mut stall = record(Source::Timers, "stall");
        stall.cause = Some("vm_paused".into());
        assert_eq!(jump_cause(&stall).as_deref(), Some("vm_paused"));
        assert_eq!(
            jump_cause(&record(Source::Timers, "suspend")).as_deref(),
            Some("suspend")
        );
        assert_eq!(
            jump_cause(&record(Source::Timers, "clocksource_jump")).as_deref(),
            Some("clocksource_jump")
        );
        for kind in ["clocksource_change", "clocksource_unstable"] {
            assert_eq!(jump_cause(&record(Source::Timers, kind)), None, "{kind}");
        }
    }

    #[test]
    fn daemon_and_service_records_are_never_jumps() {
        for source in [Source::Daemon, Source::Service] {
            let mut r = record(source, "step");
            r.delta_ns = Some(1);
            assert_eq!(jump_cause(&r), None);
            assert_eq!(service_trigger(&r), None);
        }
    }

    #[test]
    fn a_refused_step_may_explain_a_death_but_is_no_jump() {
        for verdict in [Verdict::Denied, Verdict::Slewed] {
            let mut refused = record(Source::Syscall, "step");
            refused.verdict = verdict;
            refused.delta_ns = Some(0);
            assert_eq!(jump_cause(&refused), None);
            assert_eq!(service_trigger(&refused).as_deref(), Some("refused_step"));
        }
        for verdict in [Verdict::Observed, Verdict::Allowed, Verdict::WouldDeny] {
            let mut r = record(Source::Syscall, "step");
            r.verdict = verdict;
            assert_eq!(service_trigger(&r), None, "{verdict}");
        }
        // A step that moved the clock is a jump whatever its verdict says.
        let mut allowed = record(Source::Syscall, "step");
        allowed.verdict = Verdict::Allowed;
        allowed.delta_ns = Some(4_000_000_000);
        assert_eq!(service_trigger(&allowed).as_deref(), Some("step"));
    }
}
