#!/usr/bin/env python3
"""Reference fixtures for cotune's Hugging Face checkpoint support.

Builds tiny random-weight models of each family cotune's plugins implement, with the real
`transformers` package on the CPU and fixed seeds, and saves each as a Hugging Face folder
(`config.json`, `model.safetensors`, `tokenizer.json`) under `tests/fixtures/hf/<family>/`. Next
to it, `reference.json` records, for a few fixed inputs, the logits transformers computes and its
10-token greedy continuations. cotune's tests compare against these files; Python is needed only
to regenerate them.

Usage:
    python scripts/hf_fixtures.py                 # (re)write tests/fixtures/hf/
    python scripts/hf_fixtures.py --check FOLDER  # load a folder cotune exported in transformers
                                                  # and compare its logits with the fixture's
    python scripts/hf_fixtures.py --check FOLDER --reference FILE
                                                  # ... or with FILE, logits cotune computed for
                                                  # a model it changed (tests/tests/hf.rs writes
                                                  # FOLDER/cotune-reference.json)

No network access is needed: configs are built in code and the tokenizer is trained here on a
few lines of text.
"""

import argparse
import json
import os
import sys

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
    AutoConfig,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "hf")

TEXT = [
    "Question: what is the capital of France? Answer: Paris.",
    "Question: who wrote Hamlet? Answer: William Shakespeare.",
    "Devices keep their data; only small proxy models travel to the server.",
    "The server holds a large language model and learns from every device.",
    "Edge models of any architecture teach and learn through their answers.",
    "Low-rank adapters keep what each domain learned on its own device.",
]
PROMPTS = [
    "Question: what is the capital",
    "The server holds",
    "Edge models learn",
]
SPECIALS = ["<pad>", "</s>", "<unk>"]  # ids 0, 1, 2 in every fixture tokenizer
VOCAB = 320
GREEDY_STEPS = 10


def train_tokenizer():
    """A byte-level BPE tokenizer with ids 0..2 for pad, end-of-sequence and unknown."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TEXT, trainer=trainer)
    return tok


def build(family, vocab):
    """A tiny random-weight model of `family` with a fixed seed, in float32 on the CPU."""
    torch.manual_seed({"gpt2": 1, "llama": 2, "t5": 3}[family])
    if family == "gpt2":
        config = GPT2Config(
            vocab_size=vocab,
            n_positions=64,
            n_embd=32,
            n_layer=2,
            n_head=4,
            bos_token_id=1,
            eos_token_id=1,
        )
        model = GPT2LMHeadModel(config)
    elif family == "llama":
        config = LlamaConfig(
            vocab_size=vocab,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            rms_norm_eps=1e-5,
            rope_theta=500000.0,
            tie_word_embeddings=False,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=1,
        )
        model = LlamaForCausalLM(config)
    elif family == "t5":
        config = T5Config(
            vocab_size=vocab,
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_decoder_layers=3,
            num_heads=4,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=20,
            feed_forward_proj="gated-gelu",
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
        )
        model = T5ForConditionalGeneration(config)
    else:
        raise ValueError(f"unknown family {family!r}")
    # Random initialisation gives tiny norms and biases of exactly 1 and 0; perturb every
    # parameter so that each one matters to the logits the tests compare.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def inputs(family, tok):
    """The fixed inputs: token ids of the prompts (decoder-only) or (source, decoder input)."""
    ids = [tok.encode(p).ids for p in PROMPTS]
    if family == "t5":
        # The decoder input starts with the decoder start token (0) and continues with the
        # first tokens of another prompt, so every position of both stacks is exercised.
        targets = [tok.encode(p).ids[:5] for p in reversed(PROMPTS)]
        return [{"source": s, "decoder": [0] + t} for s, t in zip(ids, targets)]
    return [{"tokens": t} for t in ids]


@torch.no_grad()
def logits_of(model, family, item):
    """Logits `[positions, vocab]` for one input, as transformers computes them."""
    if family == "t5":
        out = model(
            input_ids=torch.tensor([item["source"]]),
            decoder_input_ids=torch.tensor([item["decoder"]]),
        )
    else:
        out = model(input_ids=torch.tensor([item["tokens"]]))
    return out.logits[0]


@torch.no_grad()
def greedy(model, family, item):
    """GREEDY_STEPS greedy tokens, no end-of-sequence stop, each step a full forward pass."""
    out = []
    if family == "t5":
        source = torch.tensor([item["source"]])
        decoder = [0]
        for _ in range(GREEDY_STEPS):
            logits = model(input_ids=source, decoder_input_ids=torch.tensor([decoder])).logits
            decoder.append(int(logits[0, -1].argmax()))
        out = decoder[1:]
        # transformers' own greedy search must agree. (Its encoder-decoder cache assumes as many
        # decoder blocks as encoder blocks, which this fixture deliberately does not have.)
        check = model.generate(
            source,
            max_new_tokens=GREEDY_STEPS,
            do_sample=False,
            num_beams=1,
            eos_token_id=None,
            use_cache=False,
        )[0, 1:].tolist()
    else:
        seq = list(item["tokens"])
        for _ in range(GREEDY_STEPS):
            logits = model(input_ids=torch.tensor([seq])).logits
            seq.append(int(logits[0, -1].argmax()))
        out = seq[len(item["tokens"]):]
        check = model.generate(
            torch.tensor([item["tokens"]]),
            max_new_tokens=GREEDY_STEPS,
            do_sample=False,
            num_beams=1,
            eos_token_id=None,
            pad_token_id=0,
        )[0, len(item["tokens"]):].tolist()
    if check[: len(out)] != out:
        raise SystemExit(f"{family}: generate() gave {check}, the greedy loop {out}")
    return out


def write_fixtures():
    tok = train_tokenizer()
    vocab = tok.get_vocab_size()
    for family in ["gpt2", "llama", "t5"]:
        folder = os.path.join(OUT, family)
        os.makedirs(folder, exist_ok=True)
        model = build(family, vocab)
        model.save_pretrained(folder, safe_serialization=True)
        tok.save(os.path.join(folder, "tokenizer.json"))
        # Only the weights, config and tokenizer are fixtures.
        gen = os.path.join(folder, "generation_config.json")
        if os.path.exists(gen):
            os.remove(gen)
        cases = []
        for item in inputs(family, tok):
            logits = logits_of(model, family, item)
            case = dict(item)
            case["logits"] = [[round(float(v), 7) for v in row] for row in logits]
            case["greedy"] = greedy(model, family, item)
            cases.append(case)
        reference = {
            "family": family,
            "architecture": type(model).__name__,
            "vocab_size": vocab,
            "greedy_steps": GREEDY_STEPS,
            "prompts": PROMPTS,
            "cases": cases,
        }
        with open(os.path.join(folder, "reference.json"), "w") as f:
            json.dump(reference, f, separators=(",", ":"))
        print(f"{family}: wrote {folder} ({sum(p.numel() for p in model.parameters())} parameters)")


@torch.no_grad()
def check(folder, reference_path=None):
    """Loads `folder` in transformers and compares its logits with its family's fixture (or with
    `reference_path`, a file of the same layout)."""
    config = AutoConfig.from_pretrained(folder)
    family = config.model_type
    cls = {
        "gpt2": GPT2LMHeadModel,
        "llama": LlamaForCausalLM,
        "t5": T5ForConditionalGeneration,
    }[family]
    model = cls.from_pretrained(folder).eval()
    reference_path = reference_path or os.path.join(OUT, family, "reference.json")
    with open(reference_path) as f:
        reference = json.load(f)
    worst = 0.0
    for case in reference["cases"]:
        got = logits_of(model, family, case)
        want = torch.tensor(case["logits"])
        worst = max(worst, float((got - want).abs().max()))
        # A continuation cotune stopped at its end-of-sequence id is a prefix of this one.
        want = case["greedy"]
        got = greedy(model, family, case)
        if got[: len(want)] != want:
            raise SystemExit(f"{folder}: greedy continuation {got}, expected {want}")
    print(f"{folder}: {family} ({cls.__name__}) loads in transformers; "
          f"max |logit difference| to {reference_path} = {worst:.3g}; greedy continuations equal")
    if worst > 1e-4:
        raise SystemExit(f"{folder}: logits differ from the fixture by {worst} (> 1e-4)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", metavar="FOLDER", help="an exported folder to load and compare")
    parser.add_argument("--reference", metavar="FILE", help="logits to compare with (--check)")
    args = parser.parse_args()
    if args.check:
        check(args.check, args.reference)
    else:
        write_fixtures()


if __name__ == "__main__":
    sys.exit(main())
