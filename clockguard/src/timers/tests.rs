use super::*;

#[test]
fn offsets_of_this_kernel() {
    let btf = KernelBtf::from_sys().expect("this machine has /sys/kernel/btf/vmlinux");
    let c = hrtimer_offsets(&btf, 1).unwrap();
    // struct hrtimer opens with its timerqueue node (rb_node + expires).
    assert!(c.hrtimer_block >= 32, "{c:?}");
    let words = [c.softexpires_word, c.function_word, c.base_word];
    assert!(
        words.iter().all(|&w| (w as usize) < TIMER_BLOCK_WORDS),
        "{c:?}"
    );
    // This machine's 6.18 passes `now` by pointer, like 6.1 and 6.12.
    assert_eq!(c.flags, TIMER_CONFIG_VALID, "{c:?}");
}

#[test]
fn hrtimer_layouts_of_debian_kernels() {
    // 6.1 and 6.12: _softexpires, function, base in a row after the 32-byte node.
    assert_eq!(
        hrtimer_block(32, 40, 48).unwrap(),
        HrtimerBlock {
            start: 32,
            words: [0, 1, 2]
        }
    );
    // 7.2: base moved before them.
    assert_eq!(
        hrtimer_block(64, 72, 48).unwrap(),
        HrtimerBlock {
            start: 48,
            words: [2, 3, 0]
        }
    );
    // Too far apart for one read, misaligned, or overlapping: refused, with the offsets.
    let err = hrtimer_block(32, 40, 72).unwrap_err().to_string();
    assert!(err.contains("base at 72"), "{err}");
    assert!(hrtimer_block(32, 44, 48).is_err());
    assert!(hrtimer_block(32, 32, 48).is_err());
}
