#!/usr/bin/env bash
# Runs every DIR/t_*.sh test of one suite, in sorted order, one at a time.
#
#   bash tests/run-suite.sh tests/host     # on the host, as root
#   bash tests/run-suite.sh tests/vm       # inside the test VM (cargo xtask vm / test)
#
# Each test runs as `bash t_NAME.sh` under `timeout ${CG_TEST_TIMEOUT:-300}` (a test that
# needs longer says so in a line "# cg-timeout: SECONDS" of its own) with:
#   CG_BIN_DIR   directory with clockguard and cg-clockcall (default <repo>/target/release)
#   CG_REPO      the repository root
#   CG_TEST_TMP  a fresh empty directory for this test only (a tmpfs inside the VM)
#   CG_IN_VM     passed through (1 inside the test VM)
# and the repository root as working directory, stdin from /dev/null.
# Its output goes to <repo>/target/test-logs/<suite>/<name>.log. Lines it prints that start
# with "METRIC " are echoed to the console. Optional: CG_TEST_FILTER=<extended regex>
# runs only the tests whose name matches.
#
# A test that cannot run here exits 77 (automake's convention) after printing
# "SKIP: <reason>"; it is reported as "SKIP name (reason)" and counted apart: a skip is
# never a pass.
#
# On the host (CG_IN_VM not 1), a test that failed while something outside it changed
# this machine's clock is run once more: "RETRY name (...)" before its second outcome, the
# first log kept as <name>.first-run.log; "NOTE name: ..." names such a change during a
# test (see tests/host/README.md).
#
# The last line printed is exactly "N passed, M failed, K skipped". Exit status 1 if any
# test failed or if no tests were found.
set -uo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 SUITE_DIR" >&2
    exit 2
fi

CG_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CG_REPO
export CG_BIN_DIR="${CG_BIN_DIR:-$CG_REPO/target/release}"
export CG_IN_VM="${CG_IN_VM:-0}"
timeout_s="${CG_TEST_TIMEOUT:-300}"

if [[ ! -d "$1" ]]; then
    echo "run-suite: no such directory: $1" >&2
    echo "0 passed, 0 failed, 0 skipped"
    exit 1
fi
suite_dir="$(cd "$1" && pwd)"
suite="$(basename "$suite_dir")"
log_dir="$CG_REPO/target/test-logs/$suite"
mkdir -p "$log_dir"
rm -f "$log_dir"/*.log "$log_dir"/SUMMARY

# Per-test scratch space. The host directories are 9p inside the VM, where unix sockets
# cannot be created and inotify does not fire, so use a tmpfs there.
if [[ "$CG_IN_VM" == 1 ]]; then
    tmp_root=/run/cg-tests
    mkdir -p "$tmp_root"
    if ! mountpoint -q "$tmp_root"; then
        mount -t tmpfs -o mode=0755 none "$tmp_root" || {
            echo "run-suite: cannot mount a tmpfs at $tmp_root" >&2
            exit 1
        }
    fi
else
    tmp_root="${TMPDIR:-/tmp}"
fi

mapfile -t tests < <(find "$suite_dir" -maxdepth 1 -type f -name 't_*.sh' | LC_ALL=C sort)

now() { date +%s.%N; }

# run_test: runs $t once as described above; sets rc and secs, and records $witnessed (a
# reading of this machine's clock, on the host only) first.
run_test() {
    witnessed="$(clock_witness)"
    start="$(now)"
    # `timeout` puts itself and the test into a new process group; whatever the test left
    # running in that group is killed once the test is over.
    (
        cd "$CG_REPO" &&
            exec env CG_TEST_TMP="$tmp" CG_TEST_NAME="$name" \
                timeout --kill-after=15 "$test_timeout_s" bash "$t"
    ) </dev/null >"$log" 2>&1 &
    pid=$!
    wait "$pid"
    rc=$?
    end="$(now)"
    # The subshell exec'd env, which exec'd timeout: $pid is the test's process group.
    kill -TERM -- "-$pid" 2>/dev/null || true
    secs="$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')"
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then
        echo "FAIL: timed out after ${test_timeout_s}s (run-suite killed it, exit $rc)" >>"$log"
    fi
}

# On the host no test changes the clock, yet a hypervisor's time sync or an NTP client may,
# and a test comparing clocks may fail for it. clock_witness reads the clocks and the
# kernel's discipline state; clock_changes_since READING says what changed since ("stepped
# by +2.000 ms; ..."), nothing when nothing did. Inside the test VM tests change the clock
# themselves: no witness there.
clock_witness() {
    [[ "$CG_IN_VM" == 1 ]] && return 0
    "$CG_BIN_DIR/cg-clockcall" witness 2>/dev/null || true
}
clock_changes_since() {
    [[ -z "$1" ]] && return 0
    "$CG_BIN_DIR/cg-clockcall" witness-changes "$1" 2>/dev/null | jq -r '.changes | join("; ")' 2>/dev/null || true
}

passed=0
failed=0
skipped=0
ran=0
for t in "${tests[@]}"; do
    name="$(basename "$t" .sh)"
    if [[ -n "${CG_TEST_FILTER:-}" ]] && ! [[ "$name" =~ $CG_TEST_FILTER ]]; then
        continue
    fi
    ran=$((ran + 1))
    log="$log_dir/$name.log"
    tmp="$(mktemp -d "$tmp_root/cg-$name.XXXXXX")"
    test_timeout_s="$(grep -m1 -oE '^# cg-timeout: [0-9]+$' "$t" | grep -oE '[0-9]+$' || echo "$timeout_s")"
    run_test
    clock_changed="$(clock_changes_since "$witnessed")"
    if [[ $rc -ne 0 && $rc -ne 77 && -n "$clock_changed" ]]; then
        # Not the test's doing (host tests never change the clock): run it once more.
        echo "RETRY $name (${secs}s): it failed while this machine's clock was $clock_changed, by something outside the test; running it once more"
        mv "$log" "$log_dir/$name.first-run.log"
        rm -rf "$tmp"
        tmp="$(mktemp -d "$tmp_root/cg-$name.XXXXXX")"
        run_test
        clock_changed="$(clock_changes_since "$witnessed")"
    fi
    [[ -n "$clock_changed" ]] && echo "NOTE $name: this machine's clock was $clock_changed while it ran, by something outside the test"
    # 77 alone is no skip: under `set -e` any command failing with 77 ends a test so.
    reason="$(grep -a -m1 '^SKIP: ' "$log" | sed 's/^SKIP: //')"
    if [[ $rc -eq 77 && -n "$reason" ]]; then
        skipped=$((skipped + 1))
        echo "SKIP $name ($reason)"
        rm -rf "$tmp"
    elif [[ $rc -eq 0 ]]; then
        passed=$((passed + 1))
        echo "PASS $name (${secs}s)"
        grep -a '^METRIC ' "$log" || true
        rm -rf "$tmp"
    else
        failed=$((failed + 1))
        echo "FAIL $name (${secs}s)"
        grep -a '^METRIC ' "$log" || true
        echo "    exit status $rc; full log: $log; scratch dir kept: $tmp"
        # The reason first: a CI excerpt may keep only the first lines of what follows.
        grep -a -m 3 '^FAIL: ' "$log" | sed 's/^/    /' || true
        tail -n 40 "$log" | sed 's/^/    /'
    fi
done

if [[ $ran -eq 0 ]]; then
    echo "run-suite: no tests found in $suite_dir (t_*.sh${CG_TEST_FILTER:+ matching $CG_TEST_FILTER})"
    echo "0 passed, 0 failed, 0 skipped" | tee "$log_dir/SUMMARY"
    exit 1
fi
echo "$passed passed, $failed failed, $skipped skipped" | tee "$log_dir/SUMMARY"
[[ $failed -eq 0 ]]
