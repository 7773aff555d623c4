# Helpers for the VM tests (sourced). Each test gets CG_TEST_TMP on a tmpfs.
set -euo pipefail

CG="$CG_BIN_DIR/clockguard"
CALL="$CG_BIN_DIR/cg-clockcall"
STATE="$CG_TEST_TMP/state"
RUNTIME="$CG_TEST_TMP/run"
DAEMON_PID=""

fail() {
    echo "FAIL: $*" >&2
    if [[ -s "$CG_TEST_TMP/daemon.log" ]]; then
        echo "--- last lines of the daemon's log:" >&2
        tail -n 15 "$CG_TEST_TMP/daemon.log" >&2
    fi
    exit 1
}
# skip REASON: this kernel or machine cannot run the test (run-suite.sh reports SKIP, never
# a pass). Only for what the kernel lacks, never for a failure.
skip() {
    echo "SKIP: $*"
    exit 77
}
need_vm() { [[ "${CG_IN_VM:-0}" == 1 ]] || fail "this test changes the clock: VM only"; }

# start_daemon [extra args...]: runs `clockguard run` on the test's dirs, waits for status.
# With DAEMON_NETNS set, the daemon runs in that network namespace.
start_daemon() {
    local netns=()
    [[ -n "${DAEMON_NETNS:-}" ]] && netns=(ip netns exec "$DAEMON_NETNS")
    "${netns[@]}" "$CG" run --state-dir "$STATE" --runtime-dir "$RUNTIME" "$@" >"$CG_TEST_TMP/daemon.log" 2>&1 &
    DAEMON_PID=$!
    for _ in $(seq 1 200); do
        if "$CG" status --json --runtime-dir "$RUNTIME" >/dev/null 2>&1; then
            return 0
        fi
        kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$CG_TEST_TMP/daemon.log"; fail "daemon exited at start"; }
        sleep 0.1
    done
    cat "$CG_TEST_TMP/daemon.log"
    fail "daemon did not answer within 20 s"
}

stop_daemon() {
    if [[ -n "$DAEMON_PID" ]] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        kill -TERM "$DAEMON_PID"
        wait "$DAEMON_PID" || true
    fi
    DAEMON_PID=""
}
trap 'stop_daemon' EXIT

# start_reference PARAMS LOG SERVE_ARGS...: starts the reference NTP server (`cg-ntpref
# serve`, its pid in REF_PID) and waits until it has written PARAMS, the reference clock
# that `offset`, `watch` and `bound` hold the system clock against.
start_reference() {
    local params=$1 log=$2
    shift 2
    rm -f "$params"
    "$CG_BIN_DIR/cg-ntpref" serve --params "$params" "$@" >"$log" 2>&1 &
    REF_PID=$!
    for _ in $(seq 1 100); do [[ -s "$params" ]] && return 0; sleep 0.1; done
    fail "cg-ntpref did not start: $(cat "$log")"
}

# make_test_pki DIR: a test CA and a certificate for 127.0.0.1 (tests/make-test-pki.sh).
make_test_pki() {
    "$CG_REPO/tests/make-test-pki.sh" "$1" || fail "cannot make the test PKI in $1"
}

# wait_json TRIES FILTER CMD...: runs CMD (which prints JSON) every 0.1 s until the jq
# FILTER holds; prints the answer that passed (or the last one) and says whether one did.
wait_json() {
    local tries=$1 filter=$2 answer=""
    shift 2
    for _ in $(seq 1 "$tries"); do
        answer=$("$@" 2>/dev/null) || answer="{}"
        if echo "$answer" | jq -e "$filter" >/dev/null 2>&1; then
            echo "$answer"
            return 0
        fi
        sleep 0.1
    done
    echo "$answer"
    return 1
}

# wait_now TRIES FILTER: wait_json on `clockguard now --json` (the bound as a ClockBound
# reader sees it).
wait_now() { wait_json "$1" "$2" "$CG" now --json --runtime-dir "$RUNTIME"; }

# start_chronyd_nts_server PKI_DIR [CONF_LINE]...: Debian's chronyd 4.3 (unpacked by
# `cargo xtask setup`; -x: it keeps its time in software and never touches the clock) as
# an NTP server on port 12302 that follows the reference on 127.0.0.1:12300, and as an
# NTS-KE server on port 4460 with PKI_DIR's certificate (make_test_pki). Its log is
# $CG_TEST_TMP/chronyd.log, its pid CHRONYD_PID.
start_chronyd_nts_server() {
    local pki=$1 chronyd="$CG_REPO/target/tools/chrony/usr/sbin/chronyd"
    shift
    [[ -x "$chronyd" ]] || fail "no $chronyd: run cargo xtask setup"
    {
        echo "server 127.0.0.1 port 12300 iburst minpoll 0 maxpoll 0"
        echo "port 12302"
        echo "cmdport 0"
        echo "allow 127.0.0.0/8"
        echo "ntsserverkey $pki/server.key"
        echo "ntsservercert $pki/server.pem"
        echo "ntsport 4460"
        echo "ntsdumpdir $CG_TEST_TMP"
        echo "pidfile $CG_TEST_TMP/chronyd-server.pid"
        printf '%s\n' "$@"
    } >"$CG_TEST_TMP/chrony-server.conf"
    "$chronyd" -x -d -u root -f "$CG_TEST_TMP/chrony-server.conf" >"$CG_TEST_TMP/chronyd.log" 2>&1 &
    CHRONYD_PID=$!
}
# expect_refused LABEL COMMAND...: the command fails, and says EPERM in its own words.
expect_refused() {
    local label=$1; shift
    if "$@" >"$CG_TEST_TMP/out" 2>&1; then
        cat "$CG_TEST_TMP/out"; fail "$label: was not refused"
    fi
    grep -q "Operation not permitted" "$CG_TEST_TMP/out" \
        || { cat "$CG_TEST_TMP/out"; fail "$label: failed, but not with EPERM"; }
    echo "$label refused: $(head -c 200 "$CG_TEST_TMP/out")"
}

status_json() { "$CG" status --json --runtime-dir "$RUNTIME"; }
audit_json() { "$CG" audit --json --state-dir "$STATE"; }

# wait_records N [jq filter]: waits (15 s) until the journal has N records matching.
wait_records() {
    local want=$1 filter=${2:-.}
    local n=0
    for _ in $(seq 1 150); do
        n=$(audit_json 2>/dev/null | jq -c "select($filter)" | wc -l)
        [[ "$n" -ge "$want" ]] && return 0
        sleep 0.1
    done
    fail "expected $want records matching $filter, found $n"
}

# wait_summaries: waits until every clock call made so far is journaled, in full or counted
# in a summary record. The daemon journals an epoch's counts when the epoch after it ends:
# the calls made so far fall in the current epoch N or before, all in once N + 2 began.
wait_summaries() {
    local epoch target
    epoch=$(status_json | jq -e '.summaries.epoch | numbers') ||
        fail "no summary epoch in the status: $(status_json | jq -c .summaries)"
    target=$(( epoch + 2 ))
    for _ in $(seq 1 100); do
        epoch=$(status_json | jq '.summaries.epoch // 0')
        [[ "$epoch" -ge "$target" ]] && return 0
        sleep 0.2
    done
    fail "the daemon's summary epoch is $epoch, not $target, 20 s on"
}

# assert_no_step FILE: the 1 ms sampler (cg-clockcall sample) wrote FILE and saw no step
# and no backward move. A step shows as a change of REALTIME − MONOTONIC between two
# samples; a slew at 10 % moves it 100 µs per ms, and TCG's read jitter a few ms.
assert_no_step() {
    jq -e '.samples > 1000 and .backward_moves == 0 and (.max_step_ns | fabs) < 50000000' "$1" >/dev/null \
        || fail "the sampler saw a step or a backward move: $(cat "$1")"
}

# watch_within SECONDS OUT WATCH_ARGS...: `cg-ntpref watch WATCH_ARGS` into OUT, stopped
# after SECONDS if it has not ended by then (the watch alone gives up after 15 minutes).
watch_within() {
    local limit=$1 out=$2; shift 2
    local stop="$CG_TEST_TMP/watch.stop"
    rm -f "$stop"
    "$CG_BIN_DIR/cg-ntpref" watch "$@" --stopfile "$stop" >"$out" &
    local watch_pid=$!
    ( sleep "$limit"; touch "$stop" ) &
    local timer=$!
    wait "$watch_pid"
    kill "$timer" 2>/dev/null || true
}

# REALTIME - MONOTONIC in ns: it changes by exactly the size of a step.
offset_ns() { "$CALL" offset | jq '.realtime_minus_monotonic_ns'; }

# assert_close A B TOL: |A - B| <= TOL (integers).
assert_close() {
    local a=$1 b=$2 tol=$3
    local d=$(( a - b )); d=${d#-}
    [[ "$d" -le "$tol" ]] || fail "$a and $b differ by $d (more than $tol)"
}

# vm_pause SECONDS: asks the host (cargo xtask vm) to stop this whole VM (SIGSTOP to QEMU)
# for SECONDS and resume it; prints the pause the host measured, in seconds.
vm_pause() {
    [[ -n "${CG_VM_CONTROL:-}" && -d "$CG_VM_CONTROL" ]] ||
        fail "CG_VM_CONTROL is not set: run the VM through cargo xtask vm/test"
    rm -f "$CG_VM_CONTROL/pause-done"
    echo "$1" >"$CG_VM_CONTROL/pause-request.tmp"
    mv "$CG_VM_CONTROL/pause-request.tmp" "$CG_VM_CONTROL/pause-request"
    for _ in $(seq 1 600); do
        if [[ -f "$CG_VM_CONTROL/pause-done" ]]; then
            local answer
            answer=$(cat "$CG_VM_CONTROL/pause-done")
            rm -f "$CG_VM_CONTROL/pause-done"
            [[ "$answer" == paused_s=* ]] || fail "the host could not pause the VM: $answer"
            echo "${answer#paused_s=}"
            return 0
        fi
        sleep 0.1
    done
    fail "the host did not answer the pause request within 60 s"
}
