#!/usr/bin/env bash
# EXPERIMENTS.md E5: federated LoRA on SmolLM2-135M, 5 clients, without DP and with example-level
# DP-SGD at ε = 8, 4, 2 (δ = 1e-5), on BoolQ and PubMedQA; accuracy vs ε and bytes per round.
#
#   bash Scripts/experiments/federated_lora_dp.sh [OUTPUT_DIR]      (about 1 hour on 2 cores)
#
# Every run is `silo simulate --config FILE` with mode federated-lora; the configs are written to
# OUTPUT_DIR/configs, results to OUTPUT_DIR/<task>-<eps>/results.json; the table is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-silo-e5}
tasks=${TASKS:-"boolq pubmedqa"}
epsilons=${EPSILONS:-"none 8 4 2"}
source Scripts/experiments/common.sh
mkdir -p "$out/configs"
for task in $tasks; do
  for eps in $epsilons; do
    config="$out/configs/$task-$eps.yaml"
    {
      echo "mode: federated-lora"
      echo "task: $task"
      echo "clients: 5"
      echo "seed: 0"
      echo "centralized: false"
      echo "data: {train_examples: 320, batch_size: 4, max_length: 128}"
      echo "evaluation: {examples: 120}"
      echo "optimizer: {name: adamw, learning_rate: 0.001}"
      echo "federated: {rounds: 8, local_steps: 2, strategy: fedavg}"
      if [ "$eps" != none ]; then
        echo "privacy: {delta: 1.0e-5, example_dp: {target_epsilon: $eps, clip: 1.0}}"
      fi
    } > "$config"
    echo "== $task, ε = $eps ($(date -u +%H:%M:%S))" >&2
    OPENBLAS_NUM_THREADS=2 "$silo" simulate --config "$config" --output "$out/$task-$eps" 2> "$out/$task-$eps.log" >/dev/null
  done
done
python3 - "$out" $tasks <<'PY'
import json, sys, os
out, tasks = sys.argv[1], sys.argv[2:]
print("| task | target ε | noise z | ε spent (max over clients) | accuracy before | accuracy after | final local loss | MiB per round per client (adapters / full model) | minutes |")
print("|---|---|---|---|---|---|---|---|---|")
for task in tasks:
    for eps in ["none", "8", "4", "2"]:
        path = os.path.join(out, f"{task}-{eps}", "results.json")
        if not os.path.exists(path):
            continue
        r = json.load(open(path)); f = r["federated"]
        z = max(f["example_noise_multipliers"].values()) if f["example_noise_multipliers"] else 0
        spent = max((v["total"] for v in f["epsilon"].values()), default=0)
        b = f["bytes_per_round_per_client"]
        mib = lambda n: n / 2**20
        print(f"| {task} | {eps if eps != 'none' else 'no DP'} | {z:.3f} | {spent:.2f} | {r['eval_before']['accuracy']:.3f} | "
              f"{r['eval_after']['accuracy']:.3f} | {r['train_loss'][-1]:.3f} | "
              f"{mib(b['adapters_download'] + b['adapters_upload']):.2f} / {mib(b['full_model_download'] + b['full_model_upload']):.0f} | {r['seconds'] / 60:.1f} |")
PY
