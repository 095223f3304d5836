#!/usr/bin/env python3
"""The peer of `silo bench train-step`: the same GPT-2-shaped model in PyTorch (torch.nn), same
shapes, same thread count, same AdamW, same timing (median step after one warm-up step).

    OPENBLAS_NUM_THREADS=2 ~/.cache/silo/venv/bin/python Benchmarks/pytorch_train_step.py \
        --layers 12 --hidden 768 --heads 12 --vocab 50257 --batch 4 --seq 256 --steps 5 --json

Threads: --threads, else OPENBLAS_NUM_THREADS, else 2.
"""
import argparse
import json
import math
import os
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, c, heads):
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(c, eps=1e-5)
        self.c_attn = nn.Linear(c, 3 * c)
        self.c_proj = nn.Linear(c, c)
        self.ln_2 = nn.LayerNorm(c, eps=1e-5)
        self.c_fc = nn.Linear(c, 4 * c)
        self.mlp_proj = nn.Linear(4 * c, c)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q = q.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        k = k.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        v = v.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(b, t, c)
        x = x + self.c_proj(y)
        x = x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))
        return x


class GPT(nn.Module):
    def __init__(self, layers, c, heads, vocab, positions):
        super().__init__()
        self.wte = nn.Embedding(vocab, c)
        self.wpe = nn.Embedding(positions, c)
        self.h = nn.ModuleList([Block(c, heads) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(c, eps=1e-5)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif "ln_" in name:
                nn.init.ones_(p)
            else:
                std = 0.02 / math.sqrt(2 * layers) if ("c_proj" in name or "mlp_proj" in name) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, ids, targets):
        t = ids.shape[1]
        x = self.wte(ids) + self.wpe(torch.arange(t))
        for block in self.h:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.t()  # tied LM head
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-100)


def main():
    parser = argparse.ArgumentParser()
    for name, default in [("layers", 12), ("hidden", 768), ("heads", 12), ("vocab", 50257),
                          ("batch", 4), ("seq", 256), ("steps", 5), ("seed", 1)]:
        parser.add_argument("--" + name, type=int, default=default)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OPENBLAS_NUM_THREADS", "2")))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = GPT(args.layers, args.hidden, args.heads, args.vocab, args.seq)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq))
    targets = torch.cat([ids[:, 1:], torch.full((args.batch, 1), -100)], dim=1)

    times, losses = [], []
    for step in range(args.steps + 1):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = model(ids, targets)
        loss.backward()
        optimizer.step()
        seconds = time.perf_counter() - start
        losses.append(loss.item())
        if step > 0:
            times.append(seconds)
        if not args.json:
            print(f"step {step}: loss {loss.item():.4f}, {seconds:.3f} s{' (warm-up)' if step == 0 else ''}")
    median = sorted(times)[len(times) // 2]
    tokens = args.batch * args.seq
    n = sum(p.numel() for p in model.parameters())
    flops = 6 * n * tokens + 12 * args.layers * args.hidden * args.seq * tokens
    report = {
        "tokens_per_second": tokens / median, "step_seconds": median, "step_seconds_all": times,
        "gflops": flops / median / 1e9, "parameters": n, "threads": args.threads,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "losses": losses, "torch": torch.__version__,
    }
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print(f"{report['tokens_per_second']:.1f} tokens/s, {median:.3f} s/step, {report['gflops']:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
