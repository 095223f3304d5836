#!/usr/bin/env bash
# k-means on SmolLM2-135M's embedding (49152 x 576) into k = 491 (1%), 20 Lloyd iterations:
# `silo bench kmeans` (release) against scikit-learn in the same run.
# Usage: bash Benchmarks/kmeans.sh [K] [ITERATIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
k="${1:-491}"; iterations="${2:-20}"
home="${SILO_HOME:-$HOME/.cache/silo}"
python="$home/venv/bin/python"
gguf="$(ls "$home"/models/smollm2-135m/*.gguf | head -1)"
out="$home/bench/smollm2-embedding.safetensors"
mkdir -p "$home/bench"
[ -f "$out" ] || "$python" Benchmarks/export_embedding.py "$gguf" "$out"
swift build -c release --product silo >/dev/null
silo="$(swift build -c release --show-bin-path)/silo"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "silo:    $(OPENBLAS_NUM_THREADS=2 "$silo" bench kmeans --input "$out" --tensor token_embd.weight --k "$k" --iterations "$iterations" --seed 0 --json)"
echo "sklearn: $("$python" Benchmarks/kmeans_sklearn.py "$out" token_embd.weight "$k" "$iterations" 0)"
