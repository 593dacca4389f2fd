#!/usr/bin/env python3
"""An independent reference for cotune's GGUF LLaMA loading (optional; the project never needs
Python to build or test).

Reads a llama-architecture GGUF file with the `gguf` package (llama.cpp's own reader and
dequantisers), undoes llama.cpp's rotary permutation of the q and k rows the way `transformers`'
GGUF loader does (`reverse_permute_weights`), runs Hugging Face's LlamaForCausalLM forward pass in
NumPy (float64: RMSNorm, rotary embeddings with `rotate_half`, grouped-query attention, SwiGLU,
tied or untied head) and prints the greedy continuation of each prompt as JSON: one line per
prompt, `{"prompt": [...], "greedy": [...]}`.

    PYTHONPATH=<site with gguf and numpy> python3 scripts/gguf_llama_reference.py \
        --gguf SmolLM2-135M-Instruct.Q4_1.gguf --prompt-ids 504,3575,282,4649,314 --new 12

Prompts are given as token ids, so the model alone is compared (the tokenizer is compared
separately). No key/value cache: every step recomputes the whole sequence.
"""

import argparse
import json

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    value = f.parts[f.data[0]]
    return value.tolist()[0] if hasattr(value, "tolist") else value


def load(path):
    reader = GGUFReader(path)
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    if arch != "llama":
        raise SystemExit(f"{path}: architecture {arch!r}, only llama")
    meta = {
        "layers": field(reader, "llama.block_count"),
        "heads": field(reader, "llama.attention.head_count"),
        "kv_heads": field(reader, "llama.attention.head_count_kv"),
        "theta": field(reader, "llama.rope.freq_base", 10000.0),
        "eps": field(reader, "llama.attention.layer_norm_rms_epsilon", 1e-5),
    }
    weights = {}
    for t in reader.tensors:
        w = dequantize(t.data, t.tensor_type).astype(np.float64)
        # gguf-py gives rows x columns (ggml's dims reversed), Hugging Face's [out, in].
        w = w.reshape([int(d) for d in reversed(t.shape.tolist())])
        weights[t.name] = w
    return meta, weights


def unpermute(w, heads):
    """transformers' reverse_permute_weights: llama.cpp's permute undone."""
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def rms_norm(x, weight, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def forward(meta, w, ids):
    n = len(ids)
    heads, kv = meta["heads"], meta["kv_heads"]
    x = w["token_embd.weight"][ids]
    d = x.shape[-1]
    hd = d // heads
    inv = 1.0 / meta["theta"] ** (np.arange(0, hd, 2) / hd)
    ang = np.outer(np.arange(n), inv)
    cos = np.cos(np.concatenate([ang, ang], -1))
    sin = np.sin(np.concatenate([ang, ang], -1))
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(meta["layers"]):
        p = f"blk.{i}."
        h = rms_norm(x, w[p + "attn_norm.weight"], meta["eps"])
        q = h @ unpermute(w[p + "attn_q.weight"], heads).T
        k = h @ unpermute(w[p + "attn_k.weight"], kv).T
        v = h @ w[p + "attn_v.weight"].T
        q = q.reshape(n, heads, hd).transpose(1, 0, 2)
        k = k.reshape(n, kv, hd).transpose(1, 0, 2)
        v = v.reshape(n, kv, hd).transpose(1, 0, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = np.repeat(k, heads // kv, axis=0)
        v = np.repeat(v, heads // kv, axis=0)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = (s @ v).transpose(1, 0, 2).reshape(n, d)
        x = x + o @ w[p + "attn_output.weight"].T
        h = rms_norm(x, w[p + "ffn_norm.weight"], meta["eps"])
        g = h @ w[p + "ffn_gate.weight"].T
        u = h @ w[p + "ffn_up.weight"].T
        x = x + ((g / (1 + np.exp(-g))) * u) @ w[p + "ffn_down.weight"].T
    x = rms_norm(x, w["output_norm.weight"], meta["eps"])
    head = w.get("output.weight", w["token_embd.weight"])
    return x[-1] @ head.T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--prompt-ids", action="append", required=True)
    ap.add_argument("--new", type=int, default=12)
    args = ap.parse_args()
    meta, w = load(args.gguf)
    for prompt in args.prompt_ids:
        ids = [int(s) for s in prompt.split(",")]
        out = []
        for _ in range(args.new):
            nxt = int(np.argmax(forward(meta, w, ids + out)))
            out.append(nxt)
        print(json.dumps({"prompt": ids, "greedy": out}))


if __name__ == "__main__":
    main()
