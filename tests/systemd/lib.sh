# Helpers for the tests of the systemd machine (sourced): a Debian 12 image with systemd as
# PID 1 (cargo xtask vm --systemd). The tests drive the installed package, as an operator
# does: apt, systemctl, journalctl, clockguard on PATH. Tests run in name order in one
# boot; each one installs the package first if an earlier one removed it.
set -euo pipefail

CONF=/etc/clockguard/clockguard.toml
PINS=/sys/fs/bpf/clockguard
CALL="$CG_BIN_DIR/cg-clockcall"
DEB=$(find "$CG_REPO/target/debian" -maxdepth 1 -name 'clockguard_*_amd64.deb' | sort -V | tail -n 1)

fail() {
    echo "FAIL: $*" >&2
    echo "--- journalctl -u clockguard, last lines:" >&2
    journalctl -u clockguard --no-pager -n 25 -o short-monotonic >&2 || true
    exit 1
}

[[ $(cat /proc/1/comm) == systemd ]] ||
    fail "PID 1 is $(cat /proc/1/comm), not systemd: these tests run in the systemd machine (cargo xtask vm --systemd)"
[[ -n "$DEB" ]] || fail "no clockguard_*_amd64.deb in $CG_REPO/target/debian: run cargo xtask package"

installed() { dpkg-query -W -f='${Status}' clockguard 2>/dev/null | grep -q 'ok installed'; }

# apt_install: installs (or upgrades to) the package under test, quietly unless it fails.
apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$DEB" >"$CG_TEST_TMP/apt.log" 2>&1 ||
        { cat "$CG_TEST_TMP/apt.log"; fail "apt-get install $DEB failed"; }
}
ensure_installed() { installed || apt_install; }

# set_mode MODE: in the installed configuration file, as an operator edits it.
set_mode() { sed -i "s/^mode = .*/mode = \"$1\"/" "$CONF"; }

main_pid() { systemctl show -p MainPID --value clockguard; }

# wait_active [UNIT]: until UNIT (clockguard) is active (for clockguard: READY=1 seen,
# Type=notify), 30 s at most.
wait_active() {
    local unit=${1:-clockguard}
    for _ in $(seq 1 300); do
        [[ $(systemctl is-active "$unit") == active ]] && return 0
        sleep 0.1
    done
    fail "$unit is not active: $(systemctl is-active "$unit")"
}

# entries FIELD=VALUE...: this boot's journal entries of the unit that match, as JSON lines.
entries() { journalctl -b -u clockguard -o json --no-pager "$@"; }

# wait_entries N FIELD=VALUE...: until at least N such entries are in the journal (10 s).
wait_entries() {
    local n=$1
    shift
    for _ in $(seq 1 100); do
        (( $(entries "$@" | wc -l) >= n )) && return 0
        sleep 0.1
    done
    fail "fewer than $n journal entries with $*: $(entries "$@" | jq -c '{MESSAGE, CLOCKGUARD_SEQ}')"
}

# record SEQ: clockguard's own journal record number SEQ, one JSON line. (Judge it apart:
# jq 1.6's -e looks at the last input only, whatever a select matched before it.)
record() { clockguard audit --json | jq -c "select(.seq == $1)"; }

# expect_refused LABEL CMD...: CMD must fail (the guard's EPERM).
expect_refused() {
    local label=$1
    shift
    if "$@" >"$CG_TEST_TMP/refused.out" 2>&1; then
        fail "$label: not refused: $(cat "$CG_TEST_TMP/refused.out")"
    fi
    echo "$label refused: $(cat "$CG_TEST_TMP/refused.out")"
}
