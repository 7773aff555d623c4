# Guard mode where the kernel refuses BPF-LSM (this host: EPERM): clockguard says that
# enforcement is OFF and why, in the kernel's words, and keeps auditing.
set -euo pipefail
CG="$CG_BIN_DIR/clockguard"
STATE="$CG_TEST_TMP/state"; RUNTIME="$CG_TEST_TMP/run"
printf 'mode = "guard"\n[guard]\ndefer_to_time_services = false\n' >"$CG_TEST_TMP/guard.toml"
"$CG" run --config "$CG_TEST_TMP/guard.toml" --state-dir "$STATE" --runtime-dir "$RUNTIME" >"$CG_TEST_TMP/daemon.log" 2>&1 &
daemon=$!
trap 'kill -TERM $daemon 2>/dev/null; wait $daemon 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do "$CG" status --json --runtime-dir "$RUNTIME" >/dev/null 2>&1 && break; sleep 0.1; done
s=$("$CG" status --json --runtime-dir "$RUNTIME")
echo "$s" | jq -c '{mode, enforcement: (.enforcement | {active, reason})}'
settime=$(echo "$s" | jq -c '.hooks[] | select(.name == "settime")')
if [[ "$(echo "$settime" | jq .attached)" == true ]] && [[ "$(echo "$s" | jq .bpf_lsm_active)" == true ]]; then
    echo "this machine can enforce (settime attached, bpf LSM active): nothing to degrade"
    echo "$s" | jq -e '.enforcement.active == true' >/dev/null
    exit 0
fi
echo "$s" | jq -e '.mode == "guard" and .enforcement.active == false and (.enforcement.reason | test("enforcement is OFF")) and .enforcement.slew == null' >/dev/null \
    || { echo "guard mode claims enforcement or hides why: $(echo "$s" | jq -c .enforcement)"; exit 1; }
# The reason carries the kernel's: the hook's own error text.
why=$(echo "$settime" | jq -r '.error')
echo "$s" | jq -e --arg why "$why" '.enforcement.reason | contains($why)' >/dev/null \
    || { echo "reason does not carry the hook's error '$why'"; exit 1; }
grep -q "enforcement is OFF" "$CG_TEST_TMP/daemon.log" || { echo "not said in the log"; exit 1; }
# Still auditing.
out=$("$CG_BIN_DIR/cg-clockcall" settime-invalid 3)
pid=$(echo "$out" | jq .pid)
for _ in $(seq 1 100); do
    n=$("$CG" audit --json --state-dir "$STATE" | jq -c --argjson p "$pid" 'select(.pid == $p and .result == "EINVAL")' | wc -l)
    [[ "$n" -ge 3 ]] && break
    sleep 0.1
done
[[ "$n" -eq 3 ]] || { echo "guard mode without enforcement stopped auditing ($n of 3)"; exit 1; }
echo ok
