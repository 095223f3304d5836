#!/usr/bin/env bash
# EXPERIMENTS.md E6: Trustformer's k-means centroid exchange next to FedAvg of full weights and federated
# LoRA (issue 7). SmolLM2-135M, 3 clients, BoolQ (accuracy) and XSum (ROUGE-1/2/L, BLEU-4).
#
#   bash Scripts/experiments/centroid_exchange.sh [OUTPUT_DIR]
#   TASKS="boolq" RUNS="fedavg kmeans-0.01" bash Scripts/experiments/centroid_exchange.sh   (a subset)
#
# Runs (every one `silo simulate --config FILE`, same seed, data, rounds and local steps):
#   fedavg            full fine-tuning, FedAvg of the full weights (kmeans-centroids with ratio 1: k = rows)
#   kmeans-0.01/0.05/0.1  full fine-tuning, k-means centroids at k = ratio x rows, shared-seed alignment
#   kmeans-0.01-hungarian the same at 1% with Hungarian matching instead of a shared seed
#   lora              federated LoRA (FedAvg of the adapters)
#   lora-kmeans16     federated LoRA, each uploaded adapter update k-means coded (16 centroids, 4-bit indices)
# Configs go to OUTPUT_DIR/configs, results to OUTPUT_DIR/<task>-<run>/results.json; the table is printed.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-silo-e6}
tasks=${TASKS:-"boolq xsum"}
runs=${RUNS:-"fedavg kmeans-0.01 kmeans-0.05 kmeans-0.1 kmeans-0.01-hungarian lora lora-kmeans16"}
source Scripts/experiments/common.sh
mkdir -p "$out/configs"
for task in $tasks; do
  for run in $runs; do
    config="$out/configs/$task-$run.yaml"
    {
      echo "task: $task"
      echo "clients: 3"
      echo "seed: 0"
      echo "centralized: false"
      if [ "$task" = xsum ]; then
        echo "data: {train_examples: 192, batch_size: 4, max_length: 256}"
        echo "evaluation: {examples: 40, max_new_tokens: 32}"
      else
        echo "data: {train_examples: 192, batch_size: 4, max_length: 128}"
        echo "evaluation: {examples: 200}"
      fi
      echo "optimizer: {name: adamw, learning_rate: 0.001}"
      case $run in
        fedavg) echo "mode: kmeans-centroids"; echo "federated: {rounds: 3, local_steps: 4}"
                echo "centroids: {ratio: 1, learning_rate: 1.0e-5}" ;;
        kmeans-*-hungarian) r=${run#kmeans-}; r=${r%-hungarian}
                echo "mode: kmeans-centroids"; echo "federated: {rounds: 3, local_steps: 4}"
                echo "centroids: {ratio: $r, alignment: hungarian, learning_rate: 1.0e-5}" ;;
        kmeans-*) echo "mode: kmeans-centroids"; echo "federated: {rounds: 3, local_steps: 4}"
                echo "centroids: {ratio: ${run#kmeans-}, learning_rate: 1.0e-5}" ;;
        lora) echo "mode: federated-lora"; echo "federated: {rounds: 3, local_steps: 4, strategy: fedavg}" ;;
        lora-kmeans16) echo "mode: federated-lora"; echo "federated: {rounds: 3, local_steps: 4, strategy: fedavg, codec: kmeans-16}" ;;
        *) echo "unknown run $run" >&2; exit 2 ;;
      esac
    } > "$config"
    echo "== $task, $run ($(date -u +%H:%M:%S))" >&2
    OPENBLAS_NUM_THREADS=2 "$silo" simulate --config "$config" --output "$out/$task-$run" 2> "$out/$task-$run.log" >/dev/null
  done
done
python3 - "$out" $tasks <<'PY'
import json, os, sys
out, tasks = sys.argv[1], sys.argv[2:]
order = ["fedavg", "kmeans-0.01", "kmeans-0.05", "kmeans-0.1", "kmeans-0.01-hungarian", "lora", "lora-kmeans16"]
mib = lambda n: n / 2**20
for task in tasks:
    metrics = ["accuracy"] if task != "xsum" else ["rouge1", "rouge2", "rougeL", "bleu4"]
    scale = {"accuracy": 1, "rouge1": 100, "rouge2": 100, "rougeL": 100, "bleu4": 1}  # all text metrics 0-100
    print(f"\n{task}\n")
    print("| run | " + " | ".join(f"{m} before → after" for m in metrics) +
          " | final local loss | MiB up per round per client | vs full weights | compression s per client-round | minutes |")
    print("|---|" + "---|" * len(metrics) + "---|---|---|---|---|")
    for run in order:
        path = os.path.join(out, f"{task}-{run}", "results.json")
        if not os.path.exists(path):
            continue
        r = json.load(open(path))
        cells = [f"{r['eval_before'][m]:.3f} → {r['eval_after'][m]:.3f}" if m == "accuracy" else
                 f"{r['eval_before'][m] * scale[m]:.2f} → {r['eval_after'][m] * scale[m]:.2f}" for m in metrics]
        if r.get("centroids"):
            c = r["centroids"]; b = c["bytes_per_round_per_client"]
            up, full = b["upload"], b["full_model"]
            comp = sum(c["compression_seconds"]) / max(1, len(c["compression_seconds"]))
        else:
            f = r["federated"]; b = f["bytes_per_round_per_client"]
            ups = [v for rec in f["rounds"] for v in rec["upload_bytes"].values()]
            up = sum(ups) / len(ups); full = b["full_model_upload"]
            secs = [v for rec in f["rounds"] for v in rec.get("compression_seconds", {}).values()]
            comp = sum(secs) / len(secs) if secs else 0.0
        print(f"| {run} | " + " | ".join(cells) + f" | {r['train_loss'][-1]:.3f} | {mib(up):.2f} | {full / up:.0f}x fewer | {comp:.2f} | {r['seconds'] / 60:.1f} |")
PY
