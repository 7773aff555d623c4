# `apt install ./clockguard_*.deb` on a real systemd: the unit is enabled and becomes active
# only once the daemon sent READY=1 (Type=notify), the daemon is the unit's main process,
# its records reach journald as structured entries of the unit, and the man pages and the
# bash completion the package ships work.
source "$(dirname "$0")/lib.sh"

if installed; then apt-get purge -y -q clockguard >/dev/null; fi
apt_install
[[ $(systemctl is-enabled clockguard) == enabled ]] || fail "not enabled after install"
wait_active
[[ $(systemctl show -p Type --value clockguard) == notify ]] || fail "the unit is not Type=notify"
[[ $(systemctl show -p SubState --value clockguard) == running ]] || fail "not running"
pid=$(main_pid)
status=$(clockguard status --json)
jq -e --argjson pid "$pid" '.pid == $pid and .mode == "observe"
    and .config == "/etc/clockguard/clockguard.toml" and .state_dir == "/var/lib/clockguard"' \
    <<<"$status" >/dev/null || fail "status does not match the unit: $(jq -c '{pid, mode, config, state_dir}' <<<"$status")"
# From exec to READY=1, as systemd timed it (both on CLOCK_MONOTONIC, µs).
started_us=$(systemctl show -p ExecMainStartTimestampMonotonic --value clockguard)
ready_us=$(systemctl show -p ActiveEnterTimestampMonotonic --value clockguard)
echo "METRIC systemd_exec_to_ready_ms=$(( (ready_us - started_us) / 1000 ))"

# The start record, in journald as an entry of the unit with clockguard's fields.
wait_entries 1 CLOCKGUARD_SOURCE=daemon CLOCKGUARD_KIND=start
start=$(entries CLOCKGUARD_SOURCE=daemon CLOCKGUARD_KIND=start | tail -n 1)
echo "journald entry: $(jq -c '{MESSAGE, MESSAGE_ID, PRIORITY, CLOCKGUARD_SEQ, CLOCKGUARD_HASH, _SYSTEMD_UNIT}' <<<"$start")"
seq=$(jq -r .CLOCKGUARD_SEQ <<<"$start")
record=$(record "$seq")
jq -e --argjson r "$record" --argjson pid "$pid" '._SYSTEMD_UNIT == "clockguard.service"
    and (._PID | tonumber) == $pid and .CLOCKGUARD_HASH == $r.hash and (.MESSAGE_ID | length) == 32' \
    <<<"$start" >/dev/null || fail "the entry does not match record $seq: $start"
clockguard status | grep -E '^systemd journal: [1-9][0-9]* entries sent, 0 not taken' ||
    fail "status does not count the entries: $(clockguard status | grep -i journal)"

# man pages, from the package.
man -P cat clockguard 2>/dev/null | grep 'clockguard-status' >/dev/null || fail "man clockguard: $(man -P cat clockguard 2>&1 | head -5)"
man -P cat clockguard.toml 2>/dev/null | grep 'defer_to_time_services' >/dev/null ||
    fail "man clockguard.toml does not describe defer_to_time_services"
man -P cat clockguard-status >/dev/null 2>&1 || fail "no man page clockguard-status"
echo "man clockguard: $(man -P cat clockguard 2>/dev/null | sed -n '/^NAME/{n;p}' | sed 's/^ *//')"

# bash completion as an interactive shell loads it: on demand, by command name.
words=$(bash -c 'source /usr/share/bash-completion/bash_completion
    _completion_loader clockguard
    COMP_WORDS=(clockguard sta); COMP_CWORD=1; COMP_LINE="clockguard sta"; COMP_POINT=${#COMP_LINE}
    $(complete -p clockguard | sed -E "s/.*-F ([^ ]+).*/\1/") clockguard sta clockguard
    echo "${COMPREPLY[*]}"')
echo "completion of 'clockguard sta': $words"
[[ " $words " == *" status "* ]] || fail "bash completion does not offer status for 'clockguard sta': '$words'"
# fish asks its completions as the shell would for a command line.
fish_words=$(fish -c 'complete -C "clockguard sta"' | cut -f1 | tr '\n' ' ')
echo "fish completion of 'clockguard sta': $fish_words"
[[ " $fish_words " == *" status "* ]] || fail "fish completion does not offer status for 'clockguard sta': '$fish_words'"
# zsh: compinit finds the function in Debian's vendor-completions and binds it to the
# command; loaded, it parses and knows the subcommands.
zsh_binding=$(zsh -fc 'autoload -Uz compinit && compinit -u -d "$1/zcompdump" && print -r -- ${_comps[clockguard]}
    autoload +X _clockguard && functions _clockguard | grep -c "status"' zsh "$CG_TEST_TMP") ||
    fail "zsh: compinit or _clockguard failed: $zsh_binding"
zsh_function=${zsh_binding%%$'\n'*}
zsh_status_lines=${zsh_binding##*$'\n'}
echo "zsh: clockguard completed by $zsh_function, which names status on $zsh_status_lines lines"
[[ $zsh_function == _clockguard && $zsh_status_lines -gt 0 ]] ||
    fail "zsh does not complete clockguard with _clockguard: $zsh_binding"
