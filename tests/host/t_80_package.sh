# The Debian package `cargo xtask package` built (cargo xtask test builds it before this
# suite), inspected without installing it (installing would start the daemon on this
# machine): what it holds and where, the conffile, the maintainer scripts' systemd steps,
# the unit pointing at the packaged binary, the binary itself, man pages that render
# without a groff warning, and bash completion that completes.
set -euo pipefail
fail() { echo "FAIL: $*"; exit 1; }

deb=$(ls -1 "$CG_REPO"/target/debian/clockguard_*_amd64.deb 2>/dev/null | tail -n 1)
[[ -n "$deb" ]] || fail "no target/debian/clockguard_*_amd64.deb: run cargo xtask package"
echo "package: $deb"
dpkg-deb -f "$deb" Package Version Architecture Section Depends
[[ $(dpkg-deb -f "$deb" Package) == clockguard && $(dpkg-deb -f "$deb" Architecture) == amd64 ]] ||
    fail "not clockguard for amd64: $(dpkg-deb -f "$deb")"
dpkg-deb -f "$deb" Depends | grep -q 'libc6' || fail "no libc6 in Depends: $(dpkg-deb -f "$deb" Depends)"

ROOT="$CG_TEST_TMP/root"; CTRL="$CG_TEST_TMP/control"
dpkg-deb -x "$deb" "$ROOT"
dpkg-deb -e "$deb" "$CTRL"
dpkg-deb -c "$deb" | awk '{ print $1, $6 }' >"$CG_TEST_TMP/contents"
for f in ./usr/sbin/clockguard ./etc/clockguard/clockguard.toml \
    ./usr/share/man/man8/clockguard.8.gz ./usr/share/man/man8/clockguard-now.8.gz \
    ./usr/share/man/man8/clockguard-service-check.8.gz ./usr/share/man/man5/clockguard.toml.5.gz \
    ./usr/share/bash-completion/completions/clockguard ./usr/share/zsh/vendor-completions/_clockguard \
    ./usr/share/fish/vendor_completions.d/clockguard.fish ./usr/share/doc/clockguard/copyright \
    ./usr/share/doc/clockguard/changelog.Debian.gz ./usr/share/clockguard/prometheus/clockguard-rules.yml \
    ./usr/share/clockguard/prometheus/clockguard-rules.test.yml ./usr/lib/systemd/catalog/clockguard.catalog \
    ./usr/lib/udev/rules.d/60-clockguard-vmclock.rules; do
    grep -q " $f\$" "$CG_TEST_TMP/contents" || fail "$f is not in the package: $(cat "$CG_TEST_TMP/contents")"
done
grep -q '^-rwxr-xr-x \./usr/sbin/clockguard$' "$CG_TEST_TMP/contents" || fail "the binary is not 0755"
unit=$(grep -oE '\./(usr/)?lib/systemd/system/clockguard\.service$' "$CG_TEST_TMP/contents") ||
    fail "no clockguard.service in the package"

# The configuration is a conffile (kept over an upgrade when edited), and is the default
# the binary embeds.
grep -qx /etc/clockguard/clockguard.toml "$CTRL/conffiles" || fail "not a conffile: $(cat "$CTRL/conffiles" 2>&1)"
cmp "$ROOT/etc/clockguard/clockguard.toml" clockguard/clockguard.toml || fail "the packaged config is not the default"

# The maintainer scripts: enable and start on install, restart on upgrade, stop on
# removal, the state and any pinned guard removed (state only on purge).
grep -q 'deb-systemd-helper .*enable' "$CTRL/postinst" || fail "postinst does not enable the unit"
grep -qE 'deb-systemd-invoke (\$_dh_action|start|restart)' "$CTRL/postinst" || fail "postinst does not start the unit"
grep -qE 'deb-systemd-invoke stop' "$CTRL/prerm" || fail "prerm does not stop the unit"
# ... on removal only: an upgrade restarts it (keeping the guard), it never stops it.
grep -qF '"$1" = remove' "$CTRL/prerm" && ! grep -q upgrade "$CTRL/prerm" ||
    fail "prerm stops the unit for more than a removal: $(cat "$CTRL/prerm")"
grep -q 'run --check-config' "$CTRL/postinst" || fail "postinst restarts without checking the configuration"
grep -q 'deb-systemd-helper purge' "$CTRL/postrm" || fail "postrm does not purge the unit's state"
grep -q 'rm -rf /var/lib/clockguard' "$CTRL/postrm" || fail "postrm does not remove the state on purge"
grep -q '/sys/fs/bpf/clockguard' "$CTRL/postrm" || fail "postrm does not release a pinned guard"
for s in postinst prerm postrm; do sh -n "$CTRL/$s" || fail "$s is not valid sh"; done

# The unit starts the binary the package installs, and the binary runs.
grep -qx 'ExecStart=/usr/sbin/clockguard run' "$ROOT/${unit#./}" || fail "the unit does not start /usr/sbin/clockguard"
version=$("$ROOT/usr/sbin/clockguard" --version)
[[ "$version" == "clockguard $(dpkg-deb -f "$deb" Version | sed 's/-[^-]*$//')" ]] ||
    fail "the binary says '$version', the package $(dpkg-deb -f "$deb" Version)"

# Man pages render, and groff has nothing to say about them.
for page in man8/clockguard.8.gz man8/clockguard-now.8.gz man5/clockguard.toml.5.gz; do
    MANWIDTH=100 man --warnings -E UTF-8 -l "$ROOT/usr/share/man/$page" \
        >"$CG_TEST_TMP/page.txt" 2>"$CG_TEST_TMP/page.err" || fail "man cannot render $page"
    [[ ! -s "$CG_TEST_TMP/page.err" ]] || fail "groff warns on $page: $(head -5 "$CG_TEST_TMP/page.err")"
done
MANWIDTH=100 man -l "$ROOT/usr/share/man/man8/clockguard.8.gz" | grep 'clockguard-service-check(8)' >/dev/null ||
    fail "clockguard(8) does not list the commands"
MANWIDTH=100 man -l "$ROOT/usr/share/man/man5/clockguard.toml.5.gz" >"$CG_TEST_TMP/toml.txt"
for key in max_slew_ppm drift_floor_ppb stall_threshold_ms read_group; do
    grep -q "$key" "$CG_TEST_TMP/toml.txt" || fail "clockguard.toml(5) does not document $key"
done
grep -A2 'max_slew_ppm' "$CG_TEST_TMP/toml.txt" | head -3

# The journal's message catalog: systemd's format, one entry per explained kind, the
# MESSAGE_ID clockguard's entries carry for a step (t_75 checks the entries' IDs).
CATALOG="$ROOT/usr/lib/systemd/catalog/clockguard.catalog"
step_id=$(printf 'clockguard:syscall:step' | sha256sum | cut -c1-32)
grep -qx -- "-- $step_id" "$CATALOG" || fail "the catalog has no entry for a step ($step_id)"
[[ $(grep -cE '^-- [0-9a-f]{32}$' "$CATALOG") == $(grep -c '^Subject: ' "$CATALOG") ]] ||
    fail "catalog entries without a Subject"
awk '/^-- [0-9a-f]{32}$/ { getline; if ($0 !~ /^Subject: /) exit 1 }' "$CATALOG" ||
    fail "an entry's first line is not its Subject"

# bash completion completes a command and a flag.
completions=$(bash -c "source '$ROOT/usr/share/bash-completion/completions/clockguard'
    COMP_WORDS=(clockguard se); COMP_CWORD=1; _clockguard clockguard se clockguard; echo \"\${COMPREPLY[*]}\"
    COMP_WORDS=(clockguard now --ru); COMP_CWORD=2; _clockguard clockguard --ru now; echo \"\${COMPREPLY[*]}\"")
echo "completions: $completions"
[[ $(sed -n 1p <<<"$completions") == service-check ]] || fail "'clockguard se<TAB>' gives '$(sed -n 1p <<<"$completions")'"
[[ $(sed -n 2p <<<"$completions") == --runtime-dir ]] || fail "'clockguard now --ru<TAB>' gives '$(sed -n 2p <<<"$completions")'"
echo "PASS: $(basename "$deb"): $(wc -l <"$CG_TEST_TMP/contents") entries"
