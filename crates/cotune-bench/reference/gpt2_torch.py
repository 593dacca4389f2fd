#!/usr/bin/env python3
"""PyTorch reference for cotune's GPT-2 bench shape (optional; the project never needs Python).

The same model and batch shape as `crates/cotune-bench/configs/gpt2.toml`: vocab 512, d_model 128,
4 layers, 4 heads, MLP 512, learned positions, pre-LayerNorm, tied head; batches of
16 x (32 prompt + 32 answer) tokens. Measures, as the Rust bench does, the median over N steps
after 3 warm-up steps of: a training step (forward, cross-entropy on answer tokens, backward,
AdamW with gradient clipping), answer-logits forward, and greedy generation of 32 tokens with a
key/value cache. Prints one JSON object.

    pip install torch
    python3 gpt2_torch.py --steps 10 [--threads 2]
"""

import argparse
import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB, D, LAYERS, HEADS, POS = 512, 128, 4, 4, 128
BATCH, PROMPT, ANSWER, WARMUP = 16, 32, 32, 3


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1 = nn.LayerNorm(D)
        self.c_attn = nn.Linear(D, 3 * D)
        self.c_proj = nn.Linear(D, D)
        self.ln_2 = nn.LayerNorm(D)
        self.c_fc = nn.Linear(D, 4 * D)
        self.mlp_proj = nn.Linear(4 * D, D)

    def forward(self, x, cache=None):
        b, n, _ = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(D, dim=2)
        heads = lambda t: t.view(b, -1, HEADS, D // HEADS).transpose(1, 2)
        q, k, v = heads(q), heads(k), heads(v)
        if cache is not None:
            if cache.get("k") is not None:
                k = torch.cat([cache["k"], k], dim=2)
                v = torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        total = k.shape[2]
        scores = q @ k.transpose(2, 3) / math.sqrt(D // HEADS)
        mask = torch.ones(n, total, dtype=torch.bool).triu(total - n + 1)
        scores = scores.masked_fill(mask, float("-inf"))
        out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, D)
        x = x + self.c_proj(out)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class Gpt2(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(VOCAB, D)
        self.wpe = nn.Embedding(POS, D)
        self.h = nn.ModuleList([Block() for _ in range(LAYERS)])
        self.ln_f = nn.LayerNorm(D)

    def forward(self, tokens, caches=None, offset=0):
        n = tokens.shape[1]
        x = self.wte(tokens) + self.wpe(torch.arange(offset, offset + n))
        for i, block in enumerate(self.h):
            x = block(x, None if caches is None else caches[i])
        return self.ln_f(x)

    def logits(self, hidden):
        return hidden @ self.wte.weight.T


def median(reps, fn):
    for _ in range(WARMUP):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Gpt2()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    seq = torch.randint(0, VOCAB, (BATCH, PROMPT + ANSWER))
    inputs, targets = seq[:, :-1], seq[:, PROMPT:]
    tokens = BATCH * (PROMPT + ANSWER)

    def train():
        hidden = model(inputs)[:, PROMPT - 1 :]
        loss = F.cross_entropy(model.logits(hidden).reshape(-1, VOCAB), targets.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    def logits():
        with torch.no_grad():
            model.logits(model(inputs)[:, PROMPT - 1 :])

    def generate():
        with torch.no_grad():
            caches = [dict() for _ in range(LAYERS)]
            hidden = model(seq[:, :PROMPT], caches, 0)
            nxt = model.logits(hidden[:, -1:]).argmax(-1)
            for i in range(1, ANSWER):
                hidden = model(nxt, caches, PROMPT + i - 1)
                nxt = model.logits(hidden).argmax(-1)

    t_train = median(args.steps, train)
    t_logits = median(args.steps, logits)
    t_gen = median(min(args.steps, 5), generate)
    print(
        json.dumps(
            {
                "threads": args.threads,
                "torch": torch.__version__,
                "train_tokens_per_s": tokens / t_train,
                "answer_logits_tokens_per_s": tokens / t_logits,
                "generate_tokens_per_s": BATCH * ANSWER / t_gen,
            }
        )
    )


if __name__ == "__main__":
    main()
