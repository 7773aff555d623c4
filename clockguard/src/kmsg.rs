//! What the kernel itself says about its clocks (/dev/kmsg): the clocksource watchdog
//! marking kvm-clock or the TSC unstable, clocksource switches, kvm-clock's own notes.
//! Read from the start of the kernel's buffer (the boot's history) and then followed.

use std::{
    fs::File,
    io::{self, Read},
    os::unix::fs::OpenOptionsExt,
};

/// A kernel message about the clocks.
pub use clockguard_core::status::ClockMessage;

/// What kind of clock message `text` is, or None for any other message.
pub fn classify(text: &str) -> Option<&'static str> {
    if text.contains("Marking clocksource") && text.contains("unstable") {
        Some("clocksource_unstable")
    } else if text.contains("Marking TSC unstable") {
        Some("tsc_unstable")
    } else if text.contains("Switched to clocksource") {
        Some("clocksource_switch")
    } else if text.starts_with("clocksource:")
        && ["watchdog", "skew", "wd_nsec", "cs_nsec", "synchronization"]
            .iter()
            .any(|word| text.contains(word))
    {
        Some("clocksource_watchdog")
    } else if text.starts_with("kvm-clock:") {
        Some("kvm_clock")
    } else {
        None
    }
}

/// One /dev/kmsg record: "PRIORITY,SEQ,USEC,FLAGS[,...];TEXT" and continuation lines
/// (" KEY=VALUE") that are not part of the text.
#[derive(Debug, PartialEq)]
pub struct KmsgRecord<'a> {
    /// The syslog facility: 0 only for messages the kernel logged itself; the kernel gives
    /// anything written into /dev/kmsg from userspace another one (LOG_USER at least).
    pub facility: u32,
    pub seq: u64,
    /// µs since boot.
    pub usec: u64,
    pub text: &'a str,
}

pub fn parse_record(record: &str) -> Option<KmsgRecord<'_>> {
    let (prefix, rest) = record.split_once(';')?;
    let mut fields = prefix.split(',');
    let priority: u32 = fields.next()?.parse().ok()?;
    let seq = fields.next()?.parse().ok()?;
    let usec = fields.next()?.parse().ok()?;
    let text = rest.split('\n').next().unwrap_or("").trim_end();
    Some(KmsgRecord {
        facility: priority >> 3,
        seq,
        usec,
        text,
    })
}

/// /dev/kmsg, non-blocking: each read returns one record.
pub fn open() -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
}

/// The clock messages among the records available now. EAGAIN ends the batch; EPIPE
/// (records overwritten before we read them) is skipped.
pub fn read_available(file: &mut File, before_start: bool) -> io::Result<Vec<ClockMessage>> {
    // A record is at most 8 KiB (CONSOLE_EXT_LOG_MAX); a shorter buffer gets EINVAL.
    let mut buf = vec![0u8; 8192];
    let mut out = Vec::new();
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) if err.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        let record = String::from_utf8_lossy(&buf[..n]);
        // Only the kernel's own messages: a line written into /dev/kmsg by a program
        // must not pass for the clocksource watchdog.
        let Some(parsed) = parse_record(&record).filter(|r| r.facility == 0) else {
            continue;
        };
        if let Some(kind) = classify(parsed.text) {
            out.push(ClockMessage {
                seq: parsed.seq,
                uptime_s: parsed.usec as f64 / 1e6,
                kind: kind.into(),
                text: parsed.text.to_string(),
                before_start,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_with_and_without_continuation_lines() {
        assert_eq!(
            parse_record("6,339,5140900,-;clocksource: Switched to clocksource kvm-clock\n"),
            Some(KmsgRecord {
                facility: 0,
                seq: 339,
                usec: 5_140_900,
                text: "clocksource: Switched to clocksource kvm-clock"
            })
        );
        let r = parse_record("4,1002,88000123,-,caller=T0;tsc: Marking TSC unstable due to clocksource watchdog\n SUBSYSTEM=cpu\n").unwrap();
        assert_eq!(
            (r.facility, r.seq, r.text),
            (
                0,
                1002,
                "tsc: Marking TSC unstable due to clocksource watchdog"
            )
        );
        // Written by a program (LOG_USER, level 4): facility 1.
        assert_eq!(
            parse_record("12,1003,88000200,-;tsc: Marking TSC unstable")
                .unwrap()
                .facility,
            1
        );
        assert_eq!(parse_record("garbage"), None);
        assert_eq!(parse_record("6,x,1,-;text"), None);
    }

    #[test]
    fn the_kernels_clock_messages_are_recognised() {
        for (text, kind) in [
            (
                "clocksource: timekeeping watchdog on CPU1: Marking clocksource 'kvm-clock' as unstable because the skew is too large:",
                "clocksource_unstable",
            ),
            ("tsc: Marking TSC unstable due to clocksource watchdog", "tsc_unstable"),
            ("clocksource: Switched to clocksource acpi_pm", "clocksource_switch"),
            (
                "clocksource:                       'hpet' wd_nsec: 520001 wd_now: 1 wd_last: 2 mask: ffffffff",
                "clocksource_watchdog",
            ),
            ("kvm-clock: using sched offset of 1263 cycles", "kvm_clock"),
        ] {
            assert_eq!(classify(text), Some(kind), "{text}");
        }
        assert_eq!(classify("NET: Registered PF_INET6 protocol family"), None);
        assert_eq!(classify("clocksource: acpi_pm: mask: 0xffffff"), None);
    }
}
