#!/usr/bin/env bash
# Silo's training step next to its PyTorch peer, in one run on this machine (see BENCHMARKS.md).
#
#   bash Benchmarks/train_step.sh [rounds]      (make bench)
#
# Each round runs, back to back: Silo with the machine's OpenBLAS kernel family (whatever
# OPENBLAS_CORETYPE says), Silo with the AVX-512 family (OPENBLAS_CORETYPE=SkylakeX, only on CPUs with
# avx512f; the benchmark checks sgemm against a Float64 reference before timing), then PyTorch.
# Threads: 2 everywhere. Prints one JSON line per run, then a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
silo=.build/release/silo
python=${SILO_HOME:-$HOME/.cache/silo}/venv/bin/python
shape=(--layers 12 --hidden 768 --heads 12 --vocab 50257 --batch 4 --seq 256 --steps 5)
out=$(mktemp)
echo "== GEMM floor: every GEMM of one step, timed alone (machine default kernels, then AVX-512)"
OPENBLAS_NUM_THREADS=2 "$silo" bench gemm-shapes | tail -1
grep -q avx512f /proc/cpuinfo && env -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=2 OPENBLAS_CORETYPE=SkylakeX "$silo" bench gemm-shapes | tail -1
for round in $(seq "$rounds"); do
  OPENBLAS_NUM_THREADS=2 "$silo" bench train-step "${shape[@]}" --json | sed 's/^/silo-default /' | tee -a "$out"
  if grep -q avx512f /proc/cpuinfo; then
    env -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=2 OPENBLAS_CORETYPE=SkylakeX "$silo" bench train-step "${shape[@]}" --json \
      | sed 's/^/silo-avx512 /' | tee -a "$out"
  fi
  OPENBLAS_NUM_THREADS=2 "$python" Benchmarks/pytorch_train_step.py "${shape[@]}" --threads 2 --json | sed 's/^/pytorch /' | tee -a "$out"
done
python3 - "$out" <<'PY'
import json, sys
runs = {}
for line in open(sys.argv[1]):
    name, payload = line.split(" ", 1)
    runs.setdefault(name, []).append(json.loads(payload))
print(f"{'run':<14}{'tokens/s (best)':>16}{'s/step':>9}{'MFU':>7}{'sgemm GF/s':>12}{'peak RSS MiB':>14}")
for name, items in runs.items():
    best = max(items, key=lambda r: r["tokens_per_second"])
    print(f"{name:<14}{best['tokens_per_second']:>16.1f}{best['step_seconds']:>9.3f}{best.get('mfu', float('nan')):>7.2f}"
          f"{best.get('sgemm_gflops', float('nan')):>12.1f}{best['peak_rss_mib']:>14.0f}")
if "pytorch" in runs:
    ref = max(r["tokens_per_second"] for r in runs["pytorch"])
    for name in runs:
        if name != "pytorch":
            print(f"{name}: {max(r['tokens_per_second'] for r in runs[name]) / ref:.2f}x PyTorch")
PY
rm -f "$out"
