#!/usr/bin/env bash
# Generation speed of SmolLM2-135M, Silo next to Hugging Face transformers on this machine
# (issue 3; see BENCHMARKS.md, "Generation (issue 3)").
#
#   bash Benchmarks/generate_smollm2.sh [rounds]
#
# Batch 1, greedy, prompt "The capital of France is", 128 new tokens, 2 threads, KV cache, weights
# from the same GGUF (SmolLM2-135M-Instruct.Q4_1.gguf): `silo` is the default of `silo generate`
# (auto: keeps the Q4_1/Q8_0 blocks and multiplies them with the AVX2 + FMA kernel where the CPU has
# it), `silo-f32` expands them to Float32 at load (--weight-precision float32, OpenBLAS sgemv),
# transformers expands them to Float32 (its GGUF loader).
# End-of-sequence never stops either run early (silo --ignore-eos, transformers min_new_tokens).
# tokens/s is decode only in both: the tokens after the first over their time (Silo's
# GenerationResult.tokensPerSecond; transformers: (N-1) / (t(generate N) - t(generate 1))).
# Rounds alternate silo, silo-f32 and transformers; the summary takes each engine's best.
# SCRATCH=.build-NAME builds into another scratch path (default .build).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
scratch=${SCRATCH:-.build}
tokens=128
prompt="The capital of France is"
python=${SILO_HOME:-$HOME/.cache/silo}/venv/bin/python
model_dir=${SILO_HOME:-$HOME/.cache/silo}/models/smollm2-135m

swift build -c release --product silo --scratch-path "$scratch" >&2
silo=$scratch/release/silo
"$silo" models fetch smollm2-135m >/dev/null
echo "== $(lscpu | sed -n 's/^Model name: *//p'), 2 threads; load: $(uptime | sed 's/.*load average: //')" >&2

out=$(mktemp)
for round in $(seq "$rounds"); do
  OPENBLAS_NUM_THREADS=2 "$silo" generate --model smollm2-135m --prompt "$prompt" --max-new-tokens $tokens \
    --temperature 0 --ignore-eos --json | python3 -c 'import json,sys; d=json.load(sys.stdin); d.pop("text"); print("silo", json.dumps(d))' \
    | tee -a "$out"
  OPENBLAS_NUM_THREADS=2 "$silo" generate --model smollm2-135m --prompt "$prompt" --max-new-tokens $tokens \
    --temperature 0 --ignore-eos --json --weight-precision float32 \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); d.pop("text"); print("silo-f32", json.dumps(d))' \
    | tee -a "$out"
  "$python" Benchmarks/transformers_generate.py --model-dir "$model_dir" --prompt "$prompt" --max-new-tokens $tokens \
    --threads 2 2>/dev/null | sed 's/^/transformers /' | tee -a "$out"
done
python3 - "$out" "$tokens" <<'PY'
import json, sys
runs = {}
for line in open(sys.argv[1]):
    name, payload = line.split(" ", 1)
    runs.setdefault(name, []).append(json.loads(payload))
want = int(sys.argv[2])
for name, items in runs.items():
    for item in items:
        assert len(item["new_ids"]) == want, f"{name} generated {len(item['new_ids'])} tokens, wanted {want}"
print(f"{'engine':<14}{'tokens/s (best)':>16}{'all runs':>24}")
best = {}
for name, items in runs.items():
    rates = [r["tokens_per_second"] for r in items]
    best[name] = max(rates)
    print(f"{name:<14}{best[name]:>16.1f}{'  '.join(f'{r:.1f}' for r in rates):>24}")
if "silo" in runs and "transformers" in runs:
    # transformers' min_new_tokens masks end-of-sequence, Silo's --ignore-eos only ignores it once
    # sampled, so the texts agree up to Silo's first EOS (id 2 for SmolLM2) and may part after it.
    silo_ids, peer_ids = runs["silo"][0]["new_ids"], runs["transformers"][0]["new_ids"]
    cut = silo_ids.index(2) if 2 in silo_ids else len(silo_ids)
    same = silo_ids[:cut] == peer_ids[:cut]
    print(f"silo: {best['silo'] / best['transformers']:.2f}x transformers "
          f"(greedy tokens identical up to the first end-of-sequence, {cut} tokens: {same})")
    if "silo-f32" in runs:
        print(f"silo-f32: {best['silo-f32'] / best['transformers']:.2f}x transformers; "
              f"greedy tokens identical to silo's: {silo_ids == runs['silo-f32'][0]['new_ids']}")
    # Per round, side by side (the machine's load changes between rounds, not within one).
    for index, (mine, peer) in enumerate(zip(runs["silo"], runs["transformers"])):
        print(f"round {index + 1}: silo / transformers = {mine['tokens_per_second'] / peer['tokens_per_second']:.2f}x")
PY
rm -f "$out"
