"""`lorarank build-model`: a tiny Qwen2-architecture causal LM with a locally trained tokenizer.

    python -m lorarank build-model --data data/synth/train.parquet --layers 4 --hidden 128 --out model/base

The tokenizer is byte-level BPE trained on the training split with Qwen2's own normaliser and
pre-tokenizer (NFC, Qwen2's split regex, byte level: digits are single tokens), saved as a
`Qwen2Tokenizer`: transformers 5 rebuilds that class's pre-tokenizer on load, so a tokenizer trained
any other way would change ids after a reload. Weights are random (seeded), saved as safetensors.
Same data and seed -> byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from lorarank.cli import positive_int
from lorarank.errors import UserError
from lorarank.io import write_json

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

    from lorarank.prompts import CHAT_TEMPLATE

    tok = Tokenizer(BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    vocab = tok.get_vocab()
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in json.loads(tok.to_str())["model"]["merges"]]
    qt = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, eos_token="<|im_end|>",
                        pad_token="<|endoftext|>", bos_token=None)
    qt.chat_template = CHAT_TEMPLATE
    return qt


def build(data: str, out: str, layers: int, hidden: int, heads: int, kv_heads: int, intermediate: int,
          vocab_size: int, max_positions: int, seed: int) -> dict:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from lorarank.data import load_split
    from lorarank.prompts import SYSTEM_PROMPTS, target

    if hidden % heads or heads % kv_heads:
        raise UserError(f"--hidden {hidden} must divide by --heads {heads}, and --heads by --kv-heads {kv_heads}")
    df = load_split(data)
    texts = [q for q in df["question"]] + [target(a, lay) for a in df["answer"] for lay in ("hash", "tags")]
    texts += list(SYSTEM_PROMPTS.values()) + ["system", "user", "assistant"]
    tokenizer = train_tokenizer(texts, vocab_size)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=max_positions,
        tie_word_embeddings=True, bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    out_p = Path(out)
    tmp = out_p.with_name(f".{out_p.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    info = {"seed": seed, "data": str(data), "params": sum(p.numel() for p in model.parameters()),
            "vocab_size": len(tokenizer), "layers": layers, "hidden": hidden}
    write_json(tmp / "build.json", info)
    shutil.rmtree(out_p, ignore_errors=True)
    tmp.rename(out_p)  # the directory appears whole or not at all
    return info


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="training split (parquet) to train the tokenizer on")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--layers", type=positive_int, default=4)
    p.add_argument("--hidden", type=positive_int, default=128)
    p.add_argument("--heads", type=positive_int, default=4)
    p.add_argument("--kv-heads", type=positive_int, default=2)
    p.add_argument("--intermediate", type=positive_int, default=352)
    p.add_argument("--vocab-size", type=positive_int, default=512)
    p.add_argument("--max-positions", type=positive_int, default=512)
    p.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    info = build(args.data, args.out, args.layers, args.hidden, args.heads, args.kv_heads, args.intermediate,
                 args.vocab_size, args.max_positions, args.seed)
    print(f"tiny Qwen2: {info['layers']} layers x {info['hidden']}, {info['params']:,} params, "
          f"vocab {info['vocab_size']} -> {args.out}")
    return 0
