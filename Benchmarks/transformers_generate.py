"""Greedy generation speed of Hugging Face transformers on the same GGUF as Silo (see BENCHMARKS.md).

    ~/.cache/silo/venv/bin/python Benchmarks/transformers_generate.py \
        --model-dir ~/.cache/silo/models/smollm2-135m --threads 2 --max-new-tokens 128

The peer of `silo generate`: transformers' own GGUF loader dequantises the weights to Float32
(`from_pretrained(dir, gguf_file=..., dtype=torch.float32)`), batch 1, greedy, KV cache on, and
`min_new_tokens` so end-of-sequence never stops it early. After a warm-up it times a full
`generate(max_new_tokens=N)` and a `generate(max_new_tokens=1)` (prompt + first token) and reports

  tokens_per_second        (N - 1) / (t_N - t_1): decode only, the same definition as Silo's
                           GenerationResult.tokensPerSecond (tokens after the first / their time)
  total_tokens_per_second  N / t_N, prompt included

each as the best of --repeats timings. Prints one JSON line.
"""
import argparse
import glob
import json
import os
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", default=os.path.expanduser("~/.cache/silo/models/smollm2-135m"))
    parser.add_argument("--gguf", help="GGUF file name inside --model-dir (default: the only *.gguf there)")
    parser.add_argument("--prompt", default="The capital of France is")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import torch
    torch.set_num_threads(args.threads)
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = args.gguf
    if gguf is None:
        found = sorted(glob.glob(os.path.join(args.model_dir, "*.gguf")))
        if len(found) != 1:
            raise SystemExit(f"expected one .gguf in {args.model_dir}, found {found}; pass --gguf")
        gguf = os.path.basename(found[0])
    load_start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, gguf_file=gguf, dtype=torch.float32)
    model.eval()
    load_seconds = time.perf_counter() - load_start
    inputs = tokenizer(args.prompt, return_tensors="pt")

    def run(new_tokens):
        with torch.inference_mode():
            start = time.perf_counter()
            output = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                    do_sample=False, num_beams=1, use_cache=True,
                                    pad_token_id=tokenizer.eos_token_id)
            seconds = time.perf_counter() - start
        return output[0, inputs["input_ids"].shape[1]:].tolist(), seconds

    run(8)  # warm-up: first-call allocations and kernel selection
    n = args.max_new_tokens
    full = [run(n) for _ in range(args.repeats)]
    first = [run(1)[1] for _ in range(args.repeats)]
    new_ids = full[0][0]
    assert len(new_ids) == n, f"generated {len(new_ids)} tokens, wanted {n}"
    best_full = min(seconds for _, seconds in full)
    best_first = min(first)
    print(json.dumps({
        "engine": "transformers",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "gguf": gguf,
        "prompt_tokens": int(inputs["input_ids"].shape[1]),
        "new_tokens": len(new_ids),
        "tokens_per_second": (n - 1) / (best_full - best_first),
        "total_tokens_per_second": n / best_full,
        "generate_seconds": best_full,
        "first_token_seconds": best_first,
        "load_seconds": load_seconds,
        "new_ids": new_ids,
    }))


if __name__ == "__main__":
    main()
