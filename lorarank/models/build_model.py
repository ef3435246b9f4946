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
from dataclasses import dataclass

from lorarank.argtypes import positive_int
from lorarank.errors import UserError
from lorarank.io import atomic_dir, write_json
from lorarank.options import add_arguments, from_args, opt

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

    from lorarank.data.prompts import CHAT_TEMPLATE

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


@dataclass
class TinyModel:
    """The tiny model's shape and seed: the flags of `lorarank build-model`, config `model.tiny`."""

    layers: int = opt(4, "decoder layers", type=positive_int)
    hidden: int = opt(128, "hidden size", type=positive_int)
    heads: int = opt(4, "attention heads", type=positive_int)
    kv_heads: int = opt(2, "key/value heads", type=positive_int)
    intermediate: int = opt(352, "MLP width", type=positive_int)
    vocab_size: int = opt(512, "BPE vocabulary target", type=positive_int)
    max_positions: int = opt(512, "longest sequence (prompt + completion)", type=positive_int)
    seed: int = opt(0, "initialisation seed")

    def check(self) -> None:
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise UserError(f"--hidden {self.hidden} must divide by --heads {self.heads}, "
                            f"and --heads by --kv-heads {self.kv_heads}")


def build(data: str, out: str, shape: TinyModel) -> dict:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from lorarank.data.prepare import load_split
    from lorarank.data.prompts import SYSTEM_PROMPTS, target

    shape.check()
    layers, hidden = shape.layers, shape.hidden
    df = load_split(data)
    texts = [q for q in df["question"]] + [target(a, lay) for a in df["answer"] for lay in ("hash", "tags")]
    texts += list(SYSTEM_PROMPTS.values()) + ["system", "user", "assistant"]
    tokenizer = train_tokenizer(texts, shape.vocab_size)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=shape.intermediate, num_hidden_layers=layers,
        num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads, max_position_embeddings=shape.max_positions,
        tie_word_embeddings=True, bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )
    torch.manual_seed(shape.seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    info = {"seed": shape.seed, "data": str(data), "params": sum(p.numel() for p in model.parameters()),
            "vocab_size": len(tokenizer), "layers": layers, "hidden": hidden}
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "build.json", info)
    return info


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="training split (parquet) to train the tokenizer on")
    p.add_argument("--out", required=True, help="model directory to write")
    add_arguments(p, TinyModel)


def run(args) -> int:
    info = build(args.data, args.out, from_args(TinyModel, args))
    print(f"tiny Qwen2: {info['layers']} layers x {info['hidden']}, {info['params']:,} params, "
          f"vocab {info['vocab_size']} -> {args.out}")
    return 0
