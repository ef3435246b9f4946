"""The tiny local model: Qwen2 architecture, tokenizer ids survive a reload, deterministic build."""

import hashlib
import json

from conftest import gsm8k_rows, run_lorarank


def test_tokenizer_ids_survive_reload(tiny_model):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    saved = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))  # the pipeline exactly as trained
    loaded = AutoTokenizer.from_pretrained(tiny_model)  # transformers rebuilds Qwen2's pre-tokenizer
    assert type(loaded).__name__ == "Qwen2Tokenizer"
    texts = [r["question"] + "\n" + r["answer"] for r in gsm8k_rows("test")[:200]]  # real text, unseen
    for t in texts:
        ids = loaded(t, add_special_tokens=False)["input_ids"]
        assert ids == saved.encode(t, add_special_tokens=False).ids
        assert loaded.decode(ids) == t
    # digits are single tokens (Qwen2's pre-tokenizer splits every digit)
    toks = loaded.convert_ids_to_tokens(loaded("In 2024 it cost $1,450,000.")["input_ids"])
    assert all(len(tok) == 1 for tok in toks if any(ch.isdigit() for ch in tok))


def test_model_is_a_qwen2_with_a_chat_template(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = json.loads((tiny_model / "config.json").read_text())
    assert cfg["model_type"] == "qwen2" and cfg["num_hidden_layers"] == 4 and cfg["hidden_size"] == 64
    assert (tiny_model / "model.safetensors").is_file() and not list(tiny_model.glob("*.bin"))
    tok = AutoTokenizer.from_pretrained(tiny_model)
    text = tok.apply_chat_template([{"role": "user", "content": "2+2?"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert model.config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")


def test_build_is_deterministic(synth_data, tiny_model, tmp_path):
    # in its own process: the session's model was built in this one (conftest), so a state one build left
    # behind (a seeded generator, a cached tokenizer) would show here as a difference
    run_lorarank("build-model", "--data", synth_data / "train.parquet", "--layers", 4, "--hidden", 64,
                 "--heads", 4, "--kv-heads", 2, "--intermediate", 176, "--out", tmp_path / "again")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        a = hashlib.sha256((tiny_model / name).read_bytes()).hexdigest()
        b = hashlib.sha256((tmp_path / "again" / name).read_bytes()).hexdigest()
        assert a == b, name
