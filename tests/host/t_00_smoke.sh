#!/usr/bin/env bash
# Smoke test: the built daemon binary exists and answers --version.
set -euo pipefail
bin="$CG_BIN_DIR/clockguard"
if [[ ! -x "$bin" ]]; then
    echo "missing $bin (run: cargo xtask build --release)"
    exit 1
fi
out="$("$bin" --version)"
echo "clockguard --version: $out"
[[ -n "$out" ]]
