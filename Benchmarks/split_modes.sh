#!/usr/bin/env bash
# Seconds per step of split learning in each mode vs centralized, on SmolLM2-135M with BoolQ batches,
# 4 clients, all in one process (in-memory transport, every payload sealed), no evaluation.
# Usage: bash Benchmarks/split_modes.sh [STEPS_PER_CLIENT]   (release build; prints a table and JSON)
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-8}"
swift build -c release --product silo >/dev/null
silo="$(swift build -c release --show-bin-path)/silo"
out="$(mktemp -d)"
for mode in client-batching serial server-hierarchical; do
  cat > "$out/$mode.yaml" <<YAML
task: boolq
clients: 4
data: {train_examples: 64, max_length: 96, batch_size: 1}
split: {mode: $mode, rounds: 1, local_steps: $steps}
evaluation: {examples: 0}
centralized: true
YAML
  "$silo" simulate --config "$out/$mode.yaml" --output "$out/$mode" 2>/dev/null >/dev/null
done
python3 - "$out" <<'PY'
import json, sys, os
out = sys.argv[1]
print(f"{'mode':22} {'split s/step':>12} {'central s/step':>14} {'ratio':>6} {'client':>8} {'server':>8} {'sealing':>8} {'copying':>8}  (totals, s)")
rows = {}
for mode in ["client-batching", "serial", "server-hierarchical"]:
    r = json.load(open(os.path.join(out, mode, "results.json")))
    s, c = r["seconds_per_step"]["split"], r["seconds_per_step"]["centralized"]
    t = r["timings"]
    rows[mode] = r
    # serial records one step per client pass; normalise to one batch of every client
    per_round_split = s * (4 if mode == "serial" else 1)
    per_round_central = c * (4 if mode == "serial" else 1)
    print(f"{mode:22} {per_round_split:12.3f} {per_round_central:14.3f} {per_round_split/per_round_central:6.2f} "
          f"{t['client_compute']:8.2f} {t['server_compute']:8.2f} {t['sealing']:8.3f} {t['copying']:8.3f}")
print(json.dumps({m: {"seconds_per_step": r["seconds_per_step"], "timings": r["timings"], "steps": r["steps"],
                      "bytes": sum(r["bytes"].values())} for m, r in rows.items()}, indent=1))
PY
