#!/usr/bin/env python3
"""PyTorch reference for cotune's bench (optional; the project never needs Python).

Builds the Hugging Face `transformers` model that matches one of cotune's bench configs
(`crates/cotune-bench/configs/<model>.toml`) from that config, untrained and offline:

- gpt2:  `GPT2LMHeadModel` (learned positions, pre-LayerNorm, `gelu_new`, tied head);
- llama: `LlamaForCausalLM` (RMSNorm, RoPE, grouped-query attention, SwiGLU, untied head);
- t5:    `T5ForConditionalGeneration` (relative position buckets, ReLU feed-forward, tied head),

with every dropout at 0, as cotune's models have none; a config with a `[lora]` table gets
adapters on the query and value projections, its base frozen. Then measures what cotune's bench
measures, on the same batch shape (16 x (32 prompt + 32 answer) tokens, or `--batch`, `--prompt`,
`--answer`), as the median of N repetitions after 3 warm-up ones:

- a training step: the forward pass, the logits at the answer positions only (as cotune's
  trainer computes them), mean cross-entropy over the answer tokens, backward, global
  gradient-norm clipping at 1.0 and AdamW (weight decay 0.01), as `TrainOptions::default()`;
- answer logits: the same forward pass without gradients;
- generation: `model.generate(..., do_sample=False, use_cache=True)` of 32 new tokens, greedy
  with the key/value cache, no end-of-sequence stop (every row runs to the cap).

Tokens are counted as cotune's bench counts them: prompt + answer tokens per example for training
and answer logits, generated tokens for generation. Memory is the peak resident set size of this
process (`ru_maxrss`) minus the resident set size measured after the model was built, so it
covers activations, gradients, optimiser state and the allocator's caches, not torch's own
libraries. Prints one JSON object.

    python3 hf_torch.py --model gpt2 --config ../configs/gpt2.toml --steps 10 [--threads 2]
"""

import argparse
import json
import resource
import statistics
import time
import tomllib

import torch
import torch.nn.functional as F

BATCH, PROMPT, ANSWER, WARMUP = 16, 32, 32, 3


def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def build(model, cfg):
    """The transformers model for one of cotune's bench configs, with dropout off."""
    if model == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(
            vocab_size=cfg["vocab_size"],
            n_positions=cfg.get("n_positions", 256),
            n_embd=cfg.get("n_embd", 128),
            n_layer=cfg.get("n_layer", 4),
            n_head=cfg.get("n_head", 4),
            n_inner=cfg.get("n_inner"),
            activation_function=cfg.get("activation_function", "gelu_new"),
            layer_norm_epsilon=cfg.get("layer_norm_epsilon", 1e-5),
            tie_word_embeddings=cfg.get("tie_word_embeddings", True),
            bos_token_id=None,
            eos_token_id=None,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )
        return GPT2LMHeadModel(config)
    if model == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_hidden_layers=cfg["num_hidden_layers"],
            num_attention_heads=cfg["num_attention_heads"],
            num_key_value_heads=cfg.get("num_key_value_heads"),
            max_position_embeddings=cfg["max_position_embeddings"],
            rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
            rope_theta=cfg.get("rope_theta", 10000.0),
            tie_word_embeddings=cfg.get("tie_word_embeddings", False),
            attention_dropout=0.0,
            bos_token_id=None,
            eos_token_id=None,
        )
        return LlamaForCausalLM(config)
    if model == "t5":
        from transformers import T5Config, T5ForConditionalGeneration

        config = T5Config(
            vocab_size=cfg["vocab_size"],
            d_model=cfg["d_model"],
            d_kv=cfg["d_kv"],
            d_ff=cfg["d_ff"],
            num_layers=cfg["num_layers"],
            num_decoder_layers=cfg.get("num_decoder_layers"),
            num_heads=cfg["num_heads"],
            relative_attention_num_buckets=cfg.get("relative_attention_num_buckets", 32),
            relative_attention_max_distance=cfg.get("relative_attention_max_distance", 128),
            layer_norm_epsilon=cfg.get("layer_norm_epsilon", 1e-6),
            feed_forward_proj=cfg.get("feed_forward_proj", "relu"),
            tie_word_embeddings=cfg.get("tie_word_embeddings", True),
            decoder_start_token_id=cfg.get("decoder_start_token_id", 0),
            pad_token_id=0,
            eos_token_id=None,
            dropout_rate=0.0,
        )
        return T5ForConditionalGeneration(config)
    raise SystemExit(f"unknown model {model!r} (gpt2, llama or t5)")


class LoraLinear(torch.nn.Module):
    """A frozen linear layer plus a trainable low-rank update scaled by alpha / rank, as
    cotune's adapters (alpha defaults to 2 x rank; B starts at zero)."""

    def __init__(self, base, rank, alpha):
        super().__init__()
        self.base = base
        self.a = torch.nn.Parameter(torch.randn(rank, base.in_features) / base.in_features**0.5)
        self.b = torch.nn.Parameter(torch.zeros(base.out_features, rank))
        self.scale = alpha / rank

    def forward(self, x):
        return self.base(x) + (x @ self.a.T) @ self.b.T * self.scale


def add_lora(model, lora):
    """Freezes `model` and puts adapters on the query and value projections (cotune's default
    LLaMA targets)."""
    rank = lora["rank"]
    alpha = lora.get("alpha", 2 * rank)
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in model.model.layers:
        attn = layer.self_attn
        attn.q_proj = LoraLinear(attn.q_proj, rank, alpha)
        attn.v_proj = LoraLinear(attn.v_proj, rank, alpha)


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
    ap.add_argument("--model", required=True, choices=["gpt2", "llama", "t5"])
    ap.add_argument("--config", required=True, help="cotune's bench config (TOML)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=BATCH)
    ap.add_argument("--prompt", type=int, default=PROMPT)
    ap.add_argument("--answer", type=int, default=ANSWER)
    args = ap.parse_args()
    batch, prompt_len, answer_len = args.batch, args.prompt, args.answer
    with open(args.config, "rb") as f:
        cfg = tomllib.load(f)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(args.model, cfg)
    if "lora" in cfg:
        add_lora(model, cfg["lora"])
    model.train()
    vocab = cfg["vocab_size"]
    params = sum(p.numel() for p in model.parameters())
    baseline = rss_mib()

    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=0.01)
    seq = torch.randint(0, vocab, (batch, prompt_len + answer_len))
    prompt, answer = seq[:, :prompt_len], seq[:, prompt_len:]
    tokens = batch * (prompt_len + answer_len)
    encoder_decoder = args.model == "t5"
    if encoder_decoder:
        start = torch.full((batch, 1), model.config.decoder_start_token_id, dtype=torch.long)
        decoder_inputs = torch.cat([start, answer[:, :-1]], dim=1)

    def answer_logits():
        if encoder_decoder:
            return model(input_ids=prompt, decoder_input_ids=decoder_inputs).logits
        # Position p predicts token p + 1: the last ANSWER positions of prompt + answer[:-1].
        return model(input_ids=seq[:, :-1], logits_to_keep=answer_len).logits

    def train():
        logits = answer_logits()
        loss = F.cross_entropy(logits.reshape(-1, vocab), answer.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        # cotune reads the loss back every step.
        return loss.item()

    def logits_only():
        with torch.inference_mode():
            answer_logits()

    generated = []

    def generate():
        with torch.inference_mode():
            out = model.generate(
                input_ids=prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=answer_len,
                do_sample=False,
                num_beams=1,
                use_cache=True,
                eos_token_id=None,
                pad_token_id=0,
            )
        # Decoder-only output repeats the prompt; encoder-decoder output starts with the start token.
        new = out.shape[1] - (1 if encoder_decoder else prompt_len)
        generated.append(batch * new)

    t_train = median(args.steps, train)
    t_logits = median(args.steps, logits_only)
    model.eval()
    t_gen = median(min(args.steps, 5), generate)
    print(
        json.dumps(
            {
                "model": args.model,
                "params": params,
                "threads": args.threads,
                "torch": torch.__version__,
                "train_tokens_per_s": tokens / t_train,
                "answer_logits_tokens_per_s": tokens / t_logits,
                "generate_tokens_per_s": generated[-1] / t_gen,
                "train_step_ms": t_train * 1e3,
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                "model_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
                - baseline,
            }
        )
    )


if __name__ == "__main__":
    main()
