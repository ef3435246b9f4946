"""Loading a model refuses, in one line and before any weights are read: pickled `.bin` weights (which can
run code when unpickled) in a model directory or a checkpoint to resume, and a tokenizer without the chat
template every prompt of the workflow uses."""

import json

import pytest
import torch

from lorarank.errors import UserError
from lorarank.models import loading
from lorarank.training import runs

TINY_QWEN2 = {"model_type": "qwen2", "num_hidden_layers": 1, "hidden_size": 8, "intermediate_size": 16,
              "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 32}


def test_a_model_directory_of_pickled_weights_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY_QWEN2))
    torch.save({"lm_head.weight": torch.zeros(32, 8)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(UserError, match=r"holds no \.safetensors weights \(safetensors only: pickled \.bin"):
        loading.load(str(tmp_path), bf16=False)


def test_a_checkpoint_with_pickled_weights_is_not_resumed(tmp_path):
    ckpt = tmp_path / "checkpoints" / "checkpoint-2"
    ckpt.mkdir(parents=True)
    (ckpt / runs.MARKER).write_text(json.dumps({"run_key": "k"}))
    (ckpt / "training_args.bin").write_bytes(b"the Trainer's own record, never loaded on resume")
    (ckpt / "adapter_model.bin").write_bytes(b"a pickle")
    with pytest.raises(UserError, match=r"holds pickled weights \['adapter_model.bin'\] \(allowed: safetensors only"):
        runs.resume(tmp_path, profiler=None, key="k")
    assert (ckpt / "adapter_model.bin").exists()  # refused, not deleted: the user decides


def test_a_model_without_a_chat_template_is_refused_in_one_line(tiny_model, tmp_path):
    # a base (non-instruct) model: its first job used to end in apply_chat_template's traceback
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(tiny_model, bare)
    for f in bare.glob("chat_template.*"):
        f.unlink()
    cfg = json.loads((bare / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match=r"has no chat template, and the workflow prompts in chat form"):
        loading.load(str(bare), bf16=False)
    assert loading.load(str(tiny_model), bf16=False)[1].chat_template  # the model it was copied from loads


class _Planted:
    """A pickle that, when unpickled, leaves a file: what a hostile pytorch_model.bin could do instead."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_weights_beside_another_safetensors_file_are_never_read(tiny_model, tmp_path):
    """README: "Weights are read from safetensors only (`use_safetensors=True`)". A model directory whose weights are a
    pickled pytorch_model.bin passes the directory check when some other .safetensors file lies beside them (here an
    adapter's); the load itself must still refuse the .bin, in one line, and never unpickle it."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    weights = model / "model.safetensors"
    shutil.move(weights, model / "adapter_model.safetensors")  # a .safetensors file, not the model's weights
    marker = tmp_path / "UNPICKLED"
    torch.save({"planted": _Planted(marker)}, model / "pytorch_model.bin")
    with pytest.raises(UserError) as e:
        loading.load(str(model), bf16=False)
    msg = str(e.value)
    assert msg.startswith(f"model {str(model)!r} could not be loaded (safetensors only: pickled .bin weights can run "
                          "code when loaded") and "\n" not in msg, msg
    assert not marker.exists()
